package hub

import (
	"github.com/tributary-iot/tributary/auth"
	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/protocols/admission"
)

// deviceProfiles tells admission control a device's tenant and the limits set on it and on its
// type, and each tenant's quotas.
type deviceProfiles struct {
	registry *devices.Registry
	types    *devices.Types
	tenants  *auth.Tenants // nil: no per-tenant quotas
}

func (p deviceProfiles) Profile(id string) admission.Profile {
	d, err := p.registry.Get(id)
	if err != nil {
		return admission.Profile{}
	}
	pr := admission.Profile{Tenant: devices.TenantName(d.Tenant), Device: d.Limits}
	if d.Type != "" {
		if t, ok := p.types.Get(d.Type); ok {
			pr.Type = t.Limits
		}
	}
	return pr
}

// TenantLimits are a tenant's rate quotas (POST/PUT /api/v1/tenants), over --tenant-*.
func (p deviceProfiles) TenantLimits(tenant string) devices.Limits {
	if p.tenants == nil {
		return devices.Limits{}
	}
	q := p.tenants.Quotas(tenant)
	return devices.Limits{Rate: q.MessageRate, Burst: q.MessageBurst, BytesRate: q.BytesRate}
}

var _ admission.TenantLimits = deviceProfiles{}
