package auth

import (
	"context"
	"log/slog"
	"slices"

	"github.com/tributary-iot/tributary/devices"
)

// DefaultTenant owns everything that names no tenant: devices, rules and keys created the way
// they were before tenants existed.
const DefaultTenant = devices.DefaultTenant

// Principal is who a request or connection acts as.
type Principal struct {
	// KeyID is the API key's ID; "" for the admin key (--api-key).
	KeyID string
	// Name is the key's name, for logs and the audit log.
	Name string
	// Tenant restricts the principal to one tenant; "" means every tenant.
	Tenant string
	Scopes []Scope
}

// Admin is the principal of the --api-key admin key: every scope, every tenant.
var Admin = Principal{Name: "admin-key", Scopes: []Scope{ScopeAdmin}}

// Allows reports whether the principal has want (directly or implied).
func (p Principal) Allows(want Scope) bool {
	return slices.ContainsFunc(p.Scopes, func(have Scope) bool { return grants(have, want) })
}

// Sees reports whether the principal may see what belongs to tenant ("" is the default tenant).
func (p Principal) Sees(tenant string) bool {
	return p.Tenant == "" || p.Tenant == Normalize(tenant)
}

// Restricted reports whether the principal is confined to one tenant.
func (p Principal) Restricted() bool { return p.Tenant != "" }

// ID names the principal in logs and audit events without its secret.
func (p Principal) ID() string {
	if p.KeyID == "" {
		return "admin-key"
	}
	return "key:" + p.KeyID
}

// LogValue keeps secrets out of logs: a principal logs as its ID and tenant.
func (p Principal) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", p.ID()), slog.String("tenant", p.Tenant))
}

// Normalize maps "" to the default tenant.
func Normalize(tenant string) string {
	if tenant == "" {
		return DefaultTenant
	}
	return tenant
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal in ctx; without one (code paths that never
// authenticate, e.g. tests calling handlers directly) it is Admin, matching the single-key hub.
func FromContext(ctx context.Context) Principal {
	if p, ok := ctx.Value(principalKey{}).(Principal); ok {
		return p
	}
	return Admin
}
