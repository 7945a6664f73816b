package protocols_test

import (
	"testing"

	"github.com/tributary-iot/tributary/auth"
	"github.com/tributary-iot/tributary/protocols"
)

func TestAppMaySubscribe(t *testing.T) {
	owner := map[string]string{"a1": "acme", "b1": "globex"}
	tenantOf := func(id string) string { return owner[id] }
	acme := auth.Principal{Name: "k", Tenant: "acme", Scopes: []auth.Scope{auth.ScopeStreamsRead}}
	for _, tt := range []struct {
		p      auth.Principal
		filter string
		want   bool
	}{
		{acme, "devices/a1/telemetry", true},
		{acme, "devices/b1/telemetry", false},
		{acme, "devices/nope/telemetry", false},
		{acme, "devices/+/telemetry", true},
		{acme, "devices/#", true},
		{acme, "#", true},
		{acme, "+/a1/telemetry", true},
		{acme, "alerts/#", false},
		{acme, "$share/g/devices/b1/telemetry", false},
		{acme, "$share/g/devices/a1/telemetry", true},
		{acme, "devices", false},
		{auth.Principal{Tenant: "acme", Scopes: []auth.Scope{auth.ScopeDevicesWrite}}, "devices/a1/telemetry", false},
		{auth.Principal{Scopes: []auth.Scope{auth.ScopeStreamsRead}}, "devices/b1/telemetry", true},
		{auth.Admin, "anything/at/all", true},
	} {
		if got, why := protocols.AppMaySubscribe(tt.p, tt.filter, tenantOf); got != tt.want || (!got && why == "") {
			t.Errorf("%v subscribes %q: %v (%s), want %v", tt.p, tt.filter, got, why, tt.want)
		}
	}
}

// BenchmarkAppMaySubscribe is the per-delivery cost of the tenant check an MQTT subscriber
// with a tenant key pays (mochi asks for every message to every such subscriber).
func BenchmarkAppMaySubscribe(b *testing.B) {
	owner := map[string]string{"a1": "acme"}
	tenantOf := func(id string) string { return owner[id] }
	p := auth.Principal{Tenant: "acme", Scopes: []auth.Scope{auth.ScopeStreamsRead}}
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := protocols.AppMaySubscribe(p, "devices/a1/telemetry", tenantOf); !ok {
			b.Fatal("refused")
		}
	}
}
