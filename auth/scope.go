package auth

import (
	"fmt"
	"slices"
	"strings"
)

// Scope is one permission an API key can carry.
type Scope string

// The scopes. A write scope implies the read scope of the same resource, and ScopeAdmin implies
// every scope.
const (
	// ScopeDevicesRead: device records, state, commands, liveness, device types.
	ScopeDevicesRead Scope = "devices:read"
	// ScopeDevicesWrite: create/change/delete devices, rotate tokens, desired state, commands.
	ScopeDevicesWrite Scope = "devices:write"
	// ScopeStreamsRead: messages, telemetry, dead letters, live SSE/WebSocket, MQTT subscribe.
	ScopeStreamsRead Scope = "streams:read"
	// ScopeStreamsWrite: applications publishing messages of their own over MQTT/CoAP.
	ScopeStreamsWrite Scope = "streams:write"
	// ScopeRulesRead: rules, their stats and results, backtests.
	ScopeRulesRead Scope = "rules:read"
	// ScopeRulesWrite: create/change/delete rules.
	ScopeRulesWrite Scope = "rules:write"
	// ScopeSimRead: replays, scenarios and simulations.
	ScopeSimRead Scope = "simulations:read"
	// ScopeSimWrite: start/control/delete replays and simulations, record scenarios.
	ScopeSimWrite Scope = "simulations:write"
	// ScopeAdmin: everything, including API keys, tenants, the audit log and hub-wide settings.
	ScopeAdmin Scope = "admin"
	// ScopeAny is not a grantable scope: it marks routes any valid credential may use (minting
	// a browser token with the caller's own rights).
	ScopeAny Scope = "any"
)

// Scopes lists every grantable scope in a stable order.
var Scopes = []Scope{
	ScopeDevicesRead, ScopeDevicesWrite, ScopeStreamsRead, ScopeStreamsWrite,
	ScopeRulesRead, ScopeRulesWrite, ScopeSimRead, ScopeSimWrite, ScopeAdmin,
}

// Valid reports whether s can be granted.
func (s Scope) Valid() bool { return slices.Contains(Scopes, s) }

// ParseScopes reads a comma-separated list ("devices:read,rules:write"), rejecting unknown
// scopes by name.
func ParseScopes(list string) ([]Scope, error) {
	var out []Scope
	for part := range strings.SplitSeq(list, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		s := Scope(part)
		if !s.Valid() {
			return nil, fmt.Errorf("%w: unknown scope %q (want one of %s)", ErrInvalid, part, scopeNames())
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: at least one scope is required (one of %s)", ErrInvalid, scopeNames())
	}
	return out, nil
}

func scopeNames() string {
	names := make([]string, len(Scopes))
	for i, s := range Scopes {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

// grants reports whether having scope have allows an action needing want.
func grants(have, want Scope) bool {
	if have == want || have == ScopeAdmin || want == ScopeAny {
		return true
	}
	res, verb, ok := strings.Cut(string(want), ":")
	return ok && verb == "read" && have == Scope(res+":write")
}
