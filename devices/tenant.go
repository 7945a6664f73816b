package devices

// DefaultTenant owns every device that names no tenant, so a hub that never uses tenants
// behaves as before they existed.
const DefaultTenant = "default"

// TenantName maps "" to DefaultTenant.
func TenantName(t string) string {
	if t == "" {
		return DefaultTenant
	}
	return t
}

// TenantOf returns the tenant owning device id, DefaultTenant when it names none, and ""
// when the device is not registered. It is a map lookup: admission control and the protocol
// adapters call it per message.
func (r *Registry) TenantOf(id string) string {
	r.mu.RLock()
	rec, ok := r.devices[id]
	r.mu.RUnlock()
	if !ok {
		return ""
	}
	return TenantName(rec.Tenant)
}

// CountTenant is the number of devices tenant owns (for its max_devices quota).
func (r *Registry) CountTenant(tenant string) int {
	tenant = TenantName(tenant)
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := 0
	for _, rec := range r.devices {
		if TenantName(rec.Tenant) == tenant {
			n++
		}
	}
	return n
}
