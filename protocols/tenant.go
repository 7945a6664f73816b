package protocols

import (
	"strings"

	"github.com/tributary-iot/tributary/audit"
	"github.com/tributary-iot/tributary/auth"
	"github.com/tributary-iot/tributary/streams"
)

// AppAuthorizer is an optional capability of the Authenticator (the hub's has it): scoped
// API keys and device ownership. Without it every application key has every right, as the
// single admin key always had.
type AppAuthorizer interface {
	// AuthorizeApp returns the principal of an application's key (the admin key or a scoped
	// key), or an error when it is not valid.
	AuthorizeApp(key string) (auth.Principal, error)
	// CurrentKey is the principal of scoped key id while it is neither revoked nor expired;
	// live sessions re-check it, so a revocation ends their rights within a second.
	CurrentKey(id string) (auth.Principal, bool)
	// TenantOf is the tenant owning a device ("" for an unknown device).
	TenantOf(deviceID string) string
}

// Auditor is an optional capability of the Authenticator: it records logins and denials.
type Auditor interface {
	Audit(e audit.Event)
}

// AppMaySubscribe reports whether application principal p may subscribe to filter (or, with
// a topic, receive a message on it), and why not. A key confined to a tenant sees only its
// devices' topics: "devices/<id>/..." with <id> one of its devices, or a wildcard in place of
// the ID (deliveries are then checked topic by topic); a filter starting with a wildcard is
// accepted and filtered the same way. tenantOf is the device registry's TenantOf.
func AppMaySubscribe(p auth.Principal, filter string, tenantOf func(string) string) (bool, string) {
	if !p.Allows(auth.ScopeStreamsRead) {
		return false, "API key lacks scope " + string(auth.ScopeStreamsRead)
	}
	if !p.Restricted() {
		return true, ""
	}
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		if _, f, ok := strings.Cut(rest, "/"); ok {
			filter = f
		}
	}
	first, rest, _ := strings.Cut(filter, "/")
	switch first {
	case "#", "+":
		return true, ""
	case "devices":
	default:
		return false, "API key confined to tenant " + p.Tenant + " sees only its devices' topics (devices/<id>/...)"
	}
	id, _, _ := strings.Cut(rest, "/")
	if id == "+" || id == "#" || (id != "" && tenantOf(id) == p.Tenant) {
		return true, ""
	}
	return false, "no device " + id + " in tenant " + p.Tenant
}

// appPublish checks what a scoped application key may publish: commands and desired state of
// its tenant's devices with devices:write, anything else (device messages on a device's behalf,
// topics of its own) with streams:write; a key confined to a tenant may publish only to its
// devices' topics.
func appPublish(p auth.Principal, topic string, dt DeviceTopic, isDevice bool, tenantOf func(string) string) *Rejection {
	need := auth.ScopeStreamsWrite
	if isDevice && (dt.Kind == KindCommand || dt.Kind == KindStateDesired) {
		need = auth.ScopeDevicesWrite
	}
	if !p.Allows(need) {
		return reject(ErrForbidden, "API key %q lacks scope %s, which publishing to %s needs", p.Name, need, topic)
	}
	if !p.Restricted() {
		return nil
	}
	if !isDevice {
		return reject(ErrForbidden, "API key %q is confined to tenant %s and may publish only to its devices' topics", p.Name, p.Tenant)
	}
	if tenantOf == nil || tenantOf(dt.DeviceID) != p.Tenant {
		return reject(ErrForbidden, "no device %s in tenant %s", dt.DeviceID, p.Tenant)
	}
	return nil
}

// SetTenants gives the pipeline the device registry's TenantOf: messages are then stamped with
// their tenant (the Tb-Tenant header, left out for the default tenant) and scoped application
// keys are held to their tenant's devices.
func (in *Ingest) SetTenants(tenantOf func(deviceID string) string) { in.tenantOf = tenantOf }

// stampTenant records the message's owner on env.
func (in *Ingest) stampTenant(m Message, env *streams.Envelope) {
	t := ""
	switch {
	case m.From.Key != nil && m.From.Key.Restricted():
		t = m.From.Key.Tenant
	case env.DeviceID != "" && in.tenantOf != nil:
		t = in.tenantOf(env.DeviceID)
	}
	if t != auth.DefaultTenant {
		env.Tenant = t
	}
}
