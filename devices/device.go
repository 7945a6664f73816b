package devices

import (
	"fmt"
	"time"
)

// Device is what the registry knows about one device. The token hash never leaves the package.
type Device struct {
	ID       string            `json:"id"`
	Name     string            `json:"name,omitempty"`
	Type     string            `json:"type,omitempty"`
	Tags     map[string]string `json:"tags,omitempty"`
	Location *Location         `json:"location,omitempty"`
	Metadata map[string]any    `json:"metadata,omitempty"`
	// Tenant owns the device, its topics and its messages; "" is DefaultTenant.
	Tenant string `json:"tenant,omitempty"`
	// InactivityTimeout overrides, for this device, how long a device that has no connection
	// (CoAP) stays online after its last message; zero means its type's or the default (see
	// Liveness).
	InactivityTimeout Duration `json:"inactivity_timeout,omitempty"`
	// Limits are this device's admission limits, over its type's and the hub's (see Limits).
	Limits    Limits    `json:"limits,omitzero"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Location is a WGS 84 position.
type Location struct {
	Lat float64 `json:"lat"`
	Lon float64 `json:"lon"`
}

// record is what is stored in KV.
type record struct {
	Device
	TokenHash string `json:"token_hash"`
}

// Limits on device records, so one device cannot bloat the registry every instance holds.
const (
	MaxNameLen     = 256
	MaxTypeLen     = 64
	MaxTags        = 64
	MaxTagLen      = 256
	MaxMetadataLen = 16 << 10 // bytes of JSON
)

// ValidID reports whether id matches ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || (i > 0 && (c == '_' || c == '-'))) {
			return false
		}
	}
	return true
}

// ReservedID is the identity applications use over MQTT and DTLS; no device may take it.
const ReservedID = "app"

// ProvisionID is the MQTT username of devices claiming an identity with a provisioning key;
// no device may take it either.
const ProvisionID = "provision"

func (d *Device) validate() error {
	if !ValidID(d.ID) {
		return fmt.Errorf("%w: id %q must match ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", ErrInvalid, d.ID)
	}
	if d.ID == ReservedID {
		return fmt.Errorf("%w: id %q is reserved for applications", ErrInvalid, d.ID)
	}
	if d.ID == ProvisionID {
		return fmt.Errorf("%w: id %q is reserved for provisioning", ErrInvalid, d.ID)
	}
	if d.Tenant != "" && !ValidID(d.Tenant) {
		return fmt.Errorf("%w: tenant %q must match ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", ErrInvalid, d.Tenant)
	}
	if len(d.Name) > MaxNameLen {
		return fmt.Errorf("%w: name longer than %d bytes", ErrInvalid, MaxNameLen)
	}
	if len(d.Type) > MaxTypeLen {
		return fmt.Errorf("%w: type longer than %d bytes", ErrInvalid, MaxTypeLen)
	}
	if len(d.Tags) > MaxTags {
		return fmt.Errorf("%w: more than %d tags", ErrInvalid, MaxTags)
	}
	for k, v := range d.Tags {
		if k == "" || len(k) > MaxTagLen || len(v) > MaxTagLen {
			return fmt.Errorf("%w: tag %q: keys must be 1..%d bytes and values at most %d", ErrInvalid, k, MaxTagLen, MaxTagLen)
		}
	}
	if d.InactivityTimeout != 0 && (d.InactivityTimeout < Duration(MinInactivityTimeout) || d.InactivityTimeout > Duration(MaxInactivityTimeout)) {
		return fmt.Errorf("%w: inactivity_timeout %v is outside %v..%v", ErrInvalid, d.InactivityTimeout, Duration(MinInactivityTimeout), Duration(MaxInactivityTimeout))
	}
	if err := d.Limits.Validate(); err != nil {
		return err
	}
	if l := d.Location; l != nil && (l.Lat < -90 || l.Lat > 90 || l.Lon < -180 || l.Lon > 180) {
		return fmt.Errorf("%w: location %v,%v is outside lat -90..90, lon -180..180", ErrInvalid, l.Lat, l.Lon)
	}
	return nil
}
