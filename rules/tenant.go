package rules

import (
	"fmt"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/streams"
)

// Tenants: a rule belongs to one tenant (Spec.Tenant, "" the default tenant; a canary's is
// its CanaryDef.Tenant) and sees only that tenant's messages — those stamped with its tenant
// (Tb-Tenant), or, for messages without the header, those of devices the tenant owns now (no
// device: the default tenant). Its results carry its tenant, so rules reading other rules'
// results stay within their tenant too.

// TenantOf is the tenant a rule belongs to, never "".
func (r *Rule) TenantOf() string {
	if r.Tenant == "" && r.Canary != nil && r.Canary.Tenant != "" {
		return r.Canary.Tenant
	}
	return devices.TenantName(r.Tenant)
}

func validateTenant(spec *Spec) error {
	if spec.Tenant != "" && !devices.ValidID(spec.Tenant) {
		return invalidf("tenant", fmt.Sprintf("%q: use 1 to 64 letters, digits, '-' or '_'", spec.Tenant))
	}
	if spec.Canary != nil && spec.Tenant != "" && spec.Canary.Tenant != "" && spec.Canary.Tenant != DefaultTenant && spec.Canary.Tenant != spec.Tenant {
		return invalidf("tenant", fmt.Sprintf("%q differs from the canary's tenant %q", spec.Tenant, spec.Canary.Tenant))
	}
	return nil
}

// envTenant is the tenant a stored message belongs to.
func envTenant(env *streams.Envelope, devs DeviceLookup) string {
	if env.Tenant != "" {
		return env.Tenant
	}
	if env.DeviceID != "" && devs != nil {
		if d, err := devs.Get(env.DeviceID); err == nil {
			return devices.TenantName(d.Tenant)
		}
	}
	return devices.DefaultTenant
}

// sees reports whether the runner's rule may read env.
func (r *runner) sees(env *streams.Envelope) bool {
	return envTenant(env, r.m.devs) == r.tenant
}

// stampTenant marks a message the rule publishes with its tenant (left out for the default).
func (r *runner) stampTenant(env *streams.Envelope) {
	if r.tenant != devices.DefaultTenant {
		env.Tenant = r.tenant
	}
}
