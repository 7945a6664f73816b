package devices

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/devices/linkformat"
	"github.com/tributary-iot/tributary/streams"
)

// DiscoveryBucket holds endpoints found by active scans, keyed by Discovered.Key.
const DiscoveryBucket = "discovered"

// DiscoveryConfig tunes the list of discovered endpoints.
type DiscoveryConfig struct {
	// Retention is how long an endpoint stays listed after it last answered a scan (default
	// 24h).
	Retention time.Duration `yaml:"retention" json:"retention"`
}

// ScanResult is one answer to a multicast GET /.well-known/core.
type ScanResult struct {
	// Address is the host:port that answered.
	Address string
	// Links is its link-format payload.
	Links string
}

// Discovered is an endpoint found by a scan, waiting for an operator to adopt it.
type Discovered struct {
	// Key names it in the API: /api/v1/discovery/{key}/adopt.
	Key     string `json:"key"`
	Address string `json:"address"`
	// SuggestedID is the device ID adoption uses unless told otherwise: the endpoint's "ep"
	// link attribute, the ID in a /devices/{id}/... href, or one made from the address.
	SuggestedID string     `json:"suggested_id"`
	Resources   []Resource `json:"resources"`
	// Links is the link-format the endpoint answered; LinkError says why it could not be read.
	Links     string `json:"links"`
	LinkError string `json:"link_error,omitempty"`
	// Device is set when a device with the suggested ID is registered already.
	Device    string    `json:"device,omitempty"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}

// Resource is one link of a discovered endpoint, its attributes by name (repeated ones joined
// by a space; flags with an empty value).
type Resource struct {
	Href  string            `json:"href"`
	Attrs map[string]string `json:"attrs,omitempty"`
}

// Discovery keeps the endpoints found by scans until they are adopted or age out.
type Discovery struct {
	cfg DiscoveryConfig
	kv  jetstream.KeyValue
	reg *Registry
	log *slog.Logger
	now func() time.Time
}

func newDiscovery(ctx context.Context, js jetstream.JetStream, reg *Registry, cfg DiscoveryConfig, replicas int, log *slog.Logger) (*Discovery, error) {
	if cfg.Retention == 0 {
		cfg.Retention = 24 * time.Hour
	}
	kv, err := streams.OpenBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket: DiscoveryBucket, Description: "Tributary discovered endpoints", History: 1,
		TTL: cfg.Retention, Storage: jetstream.FileStorage, Replicas: replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("discovery bucket: %w", err)
	}
	return &Discovery{cfg: cfg, kv: kv, reg: reg, log: log, now: time.Now}, nil
}

func (d *Discovery) run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// discoveryKey makes a key (a valid device ID) from an address.
func discoveryKey(addr string) string {
	var b strings.Builder
	b.WriteString("coap-")
	dash := false
	for i := 0; i < len(addr); i++ {
		c := addr[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteByte(c)
			dash = false
		} else if !dash {
			b.WriteByte('-')
			dash = true
		}
	}
	key := strings.TrimRight(b.String(), "-")
	return key[:min(64, len(key))]
}

// suggestID picks a device ID for an endpoint from its links.
func suggestID(links []linkformat.Link, key string) string {
	for _, l := range links {
		if ep, ok := l.Get("ep"); ok && ValidID(ep) && ep != ReservedID && ep != ProvisionID {
			return ep
		}
	}
	for _, l := range links {
		if rest, ok := strings.CutPrefix(l.Target, "/devices/"); ok {
			if id, _, _ := strings.Cut(rest, "/"); ValidID(id) && id != ReservedID && id != ProvisionID {
				return id
			}
		}
	}
	return key
}

func resources(links []linkformat.Link) []Resource {
	out := make([]Resource, 0, len(links))
	for _, l := range links {
		r := Resource{Href: l.Target}
		for _, p := range l.Params {
			if r.Attrs == nil {
				r.Attrs = map[string]string{}
			}
			if old, ok := r.Attrs[p.Name]; ok && p.Value != "" {
				r.Attrs[p.Name] = old + " " + p.Value
			} else if !ok {
				r.Attrs[p.Name] = p.Value
			}
		}
		out = append(out, r)
	}
	return out
}

// Record stores what a scan found and returns the entries, by address.
func (d *Discovery) Record(ctx context.Context, results []ScanResult) ([]Discovered, error) {
	now := d.now().UTC()
	out := make([]Discovered, 0, len(results))
	for _, res := range results {
		key := discoveryKey(res.Address)
		e := Discovered{Key: key, Address: res.Address, Links: res.Links, FirstSeen: now, LastSeen: now}
		links, err := linkformat.Parse(res.Links)
		if err != nil {
			e.LinkError = err.Error()
		}
		e.Resources = resources(links)
		e.SuggestedID = suggestID(links, key)
		if old, err := d.Get(ctx, key); err == nil {
			e.FirstSeen = old.FirstSeen
		}
		if d.reg.Exists(e.SuggestedID) {
			e.Device = e.SuggestedID
		}
		data, _ := json.Marshal(e)
		if _, err := d.kv.Put(ctx, key, data); err != nil {
			return nil, fmt.Errorf("%w: store discovered endpoint: %v", ErrUnavailable, err)
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Discovered) int { return strings.Compare(a.Address, b.Address) })
	return out, nil
}

// Get returns one discovered endpoint.
func (d *Discovery) Get(ctx context.Context, key string) (Discovered, error) {
	var e Discovered
	if !ValidID(key) {
		return e, fmt.Errorf("%w: no discovered endpoint %q", ErrNotFound, key)
	}
	kve, err := d.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return e, fmt.Errorf("%w: no discovered endpoint %q (scan again?)", ErrNotFound, key)
	}
	if err != nil {
		return e, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	err = json.Unmarshal(kve.Value(), &e)
	if err == nil && e.Device == "" && d.reg.Exists(e.SuggestedID) {
		e.Device = e.SuggestedID
	}
	return e, err
}

// List returns every discovered endpoint, by address.
func (d *Discovery) List(ctx context.Context) ([]Discovered, error) {
	lister, err := d.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: list discovered endpoints: %v", ErrUnavailable, err)
	}
	var out []Discovered
	for key := range lister.Keys() {
		if e, err := d.Get(ctx, key); err == nil {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b Discovered) int { return strings.Compare(a.Address, b.Address) })
	return out, nil
}

// Adopt registers discovered endpoint key as device dev (dev.ID defaults to the suggested ID)
// and returns the device and its token; the endpoint leaves the discovered list. The device's
// metadata records where it was found.
func (d *Discovery) Adopt(ctx context.Context, key string, dev Device) (Device, string, error) {
	e, err := d.Get(ctx, key)
	if err != nil {
		return Device{}, "", err
	}
	if dev.ID == "" {
		dev.ID = e.SuggestedID
	}
	meta := map[string]any{}
	for k, v := range dev.Metadata {
		meta[k] = v
	}
	meta["discovered_address"] = e.Address
	if e.Links != "" {
		meta["discovered_links"] = e.Links
	}
	dev.Metadata = meta
	created, token, err := d.reg.Create(ctx, dev)
	if err != nil {
		return Device{}, "", err
	}
	if err := d.kv.Purge(ctx, key); err != nil {
		d.log.Warn("adopted endpoint still listed as discovered", "key", key, "err", err)
	}
	return created, token, nil
}
