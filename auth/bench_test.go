package auth_test

import (
	"context"
	"testing"

	"github.com/tributary-iot/tributary/auth"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

// BenchmarkAuthenticate is the per-request cost of checking a scoped key (every API request
// and MQTT/CoAP application login): parse, map lookup, SHA-256, constant-time compare.
func BenchmarkAuthenticate(b *testing.B) {
	bus := streamstest.New(b)
	keys, err := auth.NewKeys(context.Background(), bus.JetStream(), 1, streamstest.Logger(b))
	if err != nil {
		b.Fatal(err)
	}
	for range 1000 {
		if _, _, err := keys.Create(context.Background(), auth.KeySpec{Name: "k", Scopes: []auth.Scope{auth.ScopeDevicesRead}}, "bench"); err != nil {
			b.Fatal(err)
		}
	}
	_, secret, err := keys.Create(context.Background(), auth.KeySpec{Name: "k", Scopes: []auth.Scope{auth.ScopeDevicesRead}, Tenant: "acme"}, "bench")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		p, err := keys.Authenticate(secret)
		if err != nil || !p.Allows(auth.ScopeDevicesRead) || !p.Sees("acme") {
			b.Fatal(err)
		}
	}
}
