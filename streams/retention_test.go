package streams_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

// TestRetainerPurgesPerTenant: Enforce purges a tenant's devices' messages older than its
// retention and nothing else — not its fresh ones, not devices of tenants without a quota or
// with one at or above the stream's retention, not topics outside devices/ — and a second pass
// purges nothing more (purges are idempotent).
func TestRetainerPurgesPerTenant(t *testing.T) {
	t.Parallel()
	b := streamstest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	publish := func(topic, payload string) {
		t.Helper()
		if _, err := b.Publish(ctx, &streams.Envelope{Topic: topic, Payload: []byte(payload)}); err != nil {
			t.Fatalf("publish %s: %v", topic, err)
		}
	}
	count := func(filter string) int {
		t.Helper()
		p, err := b.Latest(ctx, []string{filter}, 1000, 0)
		if err != nil {
			t.Fatalf("read %s: %v", filter, err)
		}
		return len(p.Messages)
	}
	publish("devices/a1/telemetry", "old")
	publish("devices/a1/events/x", "old")
	publish("devices/b1/telemetry", "old")
	publish("devices/c1/telemetry", "old")
	publish("rules/r1/results", "old")
	time.Sleep(500 * time.Millisecond) // let them age past a's 300ms retention
	publish("devices/a1/telemetry", "fresh")

	tenants := []streams.TenantRetention{
		{Tenant: "a", Retention: 300 * time.Millisecond, Devices: []string{"a1", "a-none"}},
		{Tenant: "b", Devices: []string{"b1"}},                             // no quota
		{Tenant: "c", Retention: 200 * time.Hour, Devices: []string{"c1"}}, // above the stream's 168h
	}
	r := streams.NewRetainer(b, time.Minute, func() []streams.TenantRetention { return tenants }, streamstest.Logger(t))
	if n, err := r.Enforce(ctx); err != nil || n != 2 {
		t.Fatalf("first pass purged %d, %v; want a1's 2 old messages", n, err)
	}
	if got := count("devices/a1/#"); got != 1 {
		t.Errorf("a1 keeps %d messages, want its fresh one", got)
	}
	for _, f := range []string{"devices/b1/#", "devices/c1/#", "rules/r1/results"} {
		if got := count(f); got != 1 {
			t.Errorf("%s keeps %d messages, want 1", f, got)
		}
	}
	if n, err := r.Enforce(ctx); err != nil || n != 0 {
		t.Errorf("second pass purged %d, %v; want 0", n, err)
	}
	// Once the fresh message is past the retention too, there is no message at the cutoff and
	// the purge takes everything up to the stream's last sequence.
	time.Sleep(400 * time.Millisecond)
	if n, err := r.Enforce(ctx); err != nil || n != 1 {
		t.Errorf("third pass purged %d, %v; want a1's last message", n, err)
	}
	if got := count("devices/a1/#"); got != 0 {
		t.Errorf("a1 keeps %d messages, want none", got)
	}
	publish("devices/a1/telemetry", "new")
	if n, err := r.Enforce(ctx); err != nil || n != 0 || count("devices/a1/#") != 1 {
		t.Errorf("pass after a new message purged %d, %v; want 0 and the new message kept", n, err)
	}
}

// BenchmarkRetainerEnforce is one pass over a tenant of 1,000 devices with a message each:
// the steady state, where each device costs a message get and a purge that removes nothing.
func BenchmarkRetainerEnforce(b *testing.B) {
	bus := streamstest.New(b)
	ctx := context.Background()
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = fmt.Sprintf("dev%04d", i)
		if _, err := bus.Publish(ctx, &streams.Envelope{Topic: "devices/" + ids[i] + "/telemetry", Payload: []byte("x")}); err != nil {
			b.Fatal(err)
		}
	}
	tenants := []streams.TenantRetention{{Tenant: "a", Retention: time.Hour, Devices: ids}}
	r := streams.NewRetainer(bus, time.Minute, func() []streams.TenantRetention { return tenants }, streamstest.Logger(b))
	b.ReportAllocs()
	for b.Loop() {
		if n, err := r.Enforce(ctx); err != nil || n != 0 {
			b.Fatalf("purged %d, %v", n, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "µs/device")
}
