package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/tributary-iot/tributary/auth"
	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/simulator"
	"github.com/tributary-iot/tributary/simulator/replay"
	"github.com/tributary-iot/tributary/streams"
)

// Tenants in the API. Devices stay globally unique and are owned by one tenant; a key confined
// to a tenant sees only what that tenant owns: routes with a device in the path are checked by
// the guard (another tenant's device is "not found"), lists are filtered here, and objects with
// a tenant of their own (rules, canaries, replays, simulations, keys) are checked by their
// handlers with visible.

// envTenant is the tenant a message belongs to: its Tb-Tenant header, else its device's
// current owner; "" when neither says (an application's own topic, a deleted device), which
// only keys not confined to a tenant see.
func (s *Server) envTenant(env *streams.Envelope) string {
	if env.Tenant != "" {
		return env.Tenant
	}
	if env.DeviceID != "" {
		if d, err := s.deps.Devices.Get(env.DeviceID); err == nil {
			return devices.TenantName(d.Tenant)
		}
	}
	return ""
}

// mayReceive reports whether a live subscriber acting as p may get env.
func (s *Server) mayReceive(p auth.Principal, env *streams.Envelope) bool {
	return !p.Restricted() || s.envTenant(env) == p.Tenant
}

// liveFilter returns the check each live message passes for the request's principal. A scoped
// key is looked up again for every message (a map lookup), and when it has been revoked or has expired
// cancel ends the stream.
func (s *Server) liveFilter(ctx context.Context, cancel context.CancelFunc) func(*streams.Envelope) bool {
	p := auth.FromContext(ctx)
	if p.KeyID == "" {
		return func(env *streams.Envelope) bool { return s.mayReceive(p, env) }
	}
	return func(env *streams.Envelope) bool {
		if _, ok := s.deps.Keys.Current(p.KeyID); !ok {
			cancel()
			return false
		}
		return s.mayReceive(p, env)
	}
}

// visible reports whether the request's principal may see an object owned by tenant.
func visible(r *http.Request, tenant string) bool { return principal(r).Sees(tenant) }

// ownTenant is the tenant a new object is created in: the key's own, or for a key not
// confined to a tenant the one asked for (default: the default tenant). It answers the request
// and returns false when the tenant is not acceptable.
func (s *Server) ownTenant(w http.ResponseWriter, r *http.Request, asked string) (string, bool) {
	p := principal(r)
	if p.Restricted() {
		if asked != "" && asked != p.Tenant {
			s.deny(w, r, p, http.StatusForbidden, fmt.Sprintf("API key %q is confined to tenant %s and cannot create objects in tenant %s", p.Name, p.Tenant, asked))
			return "", false
		}
		return p.Tenant, true
	}
	if asked == "" || asked == auth.DefaultTenant {
		return asked, true
	}
	if s.deps.Tenants != nil {
		if _, ok := s.deps.Tenants.Get(asked); !ok {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("tenant %q does not exist: create it with POST /api/v1/tenants", asked))
			return "", false
		}
	}
	return asked, true
}

// deviceQuota answers 403 and returns false when tenant would exceed its max_devices quota by
// adding n devices.
func (s *Server) deviceQuota(w http.ResponseWriter, tenant string, n int) bool {
	if s.deps.Tenants == nil {
		return true
	}
	t, ok := s.deps.Tenants.Get(tenant)
	c, counts := s.deps.Devices.(deviceCounter)
	if !ok || !counts || t.Quotas.MaxDevices == 0 {
		return true
	}
	if have := c.CountTenant(tenant); have+n > t.Quotas.MaxDevices {
		writeError(w, http.StatusForbidden, fmt.Sprintf("tenant %s has %d devices; its quota is %d (max_devices)", auth.Normalize(tenant), have, t.Quotas.MaxDevices))
		return false
	}
	return true
}

// ownDevices sets the tenant of new devices (see ownTenant) and checks the tenants' device
// quotas; it answers the request and returns false when they cannot be created.
func (s *Server) ownDevices(w http.ResponseWriter, r *http.Request, ds []devices.Device) bool {
	adding := map[string]int{}
	for i := range ds {
		t, ok := s.ownTenant(w, r, ds[i].Tenant)
		if !ok {
			return false
		}
		ds[i].Tenant = t
		adding[devices.TenantName(t)]++
	}
	for t, n := range adding {
		if !s.deviceQuota(w, t, n) {
			return false
		}
	}
	return true
}

// visibleMessages keeps the messages the request's principal may see (a page of dead letters
// for a key confined to a tenant may so come out shorter than the limit; "before" still pages).
func (s *Server) visibleMessages(r *http.Request, msgs []*streams.Envelope) []*streams.Envelope {
	p := principal(r)
	if !p.Restricted() {
		return msgs
	}
	out := msgs[:0:0]
	for _, m := range msgs {
		if s.mayReceive(p, m) {
			out = append(out, m)
		}
	}
	return out
}

// replayTenant confines a replay started by a key of one tenant to that tenant's devices: it
// must name them (devices), each must be the tenant's (else "not found"), and it may not read
// a scenario (scenarios are hub-wide).
func (s *Server) replayTenant(w http.ResponseWriter, r *http.Request, req *replay.Request) bool {
	tenant, ok := s.selectionTenant(w, r, req.Selection, "a replay")
	if ok && tenant != "" {
		req.Tenant = tenant
	}
	return ok
}

// selectionTenant confines what a key restricted to a tenant reads from the stream (a replay,
// a backtest) to that tenant: the selection must name the devices, all of them the tenant's,
// and cannot be a scenario (scenarios are hub-wide). It returns the key's tenant ("" for a key
// not confined to one), or answers the request and returns false.
func (s *Server) selectionTenant(w http.ResponseWriter, r *http.Request, sel simulator.Selection, what string) (string, bool) {
	p := principal(r)
	if !p.Restricted() {
		return "", true
	}
	if sel.Scenario != "" || len(sel.Devices) == 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("API key %q is confined to tenant %s: %s must name its devices and cannot read scenarios", p.Name, p.Tenant, what))
		return "", false
	}
	for _, id := range sel.Devices {
		if d, err := s.deps.Devices.Get(id); err != nil || !p.Sees(d.Tenant) {
			writeError(w, http.StatusNotFound, fmt.Sprintf("%s: %s", devices.ErrNotFound, id))
			return "", false
		}
	}
	return p.Tenant, true
}
