package audit_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/audit"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

// TestFolding: repeated identical logins from one source within the fold window become the
// first event plus one event with the count; other sources, outcomes and types are not folded;
// Read filters by type family, tenant and time.
func TestFolding(t *testing.T) {
	t.Parallel()
	bus := streamstest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l, err := audit.New(ctx, bus.JetStream(), audit.Config{FoldWindow: 300 * time.Millisecond}, streamstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	start := time.Now().UTC()
	fail := audit.Event{Type: audit.TypeLogin, Protocol: "mqtt", Source: "10.0.0.1:5000", Principal: "device:d1", Outcome: audit.Failure, Reason: "wrong token"}
	for range 1000 {
		l.Record(fail)
	}
	other := fail
	other.Source = "10.0.0.2:6000"
	l.Record(other)
	l.Record(audit.Event{Type: audit.TypeKeyCreated, Outcome: audit.Success, Tenant: "acme", Object: "key:1"})
	l.Record(audit.Event{Type: audit.TypeKeyRevoked, Outcome: audit.Success, Tenant: "globex", Object: "key:2"})

	var events []audit.Event
	deadline := time.Now().Add(10 * time.Second)
	for {
		events, err = l.Read(ctx, audit.Query{Type: "login"})
		if err != nil {
			t.Fatal(err)
		}
		if len(events) == 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(events) != 3 {
		t.Fatalf("got %d login events, want 3 (first, folded, other source): %+v", len(events), events)
	}
	var folded *audit.Event
	for i := range events {
		if events[i].Count > 0 {
			folded = &events[i]
		}
	}
	if folded == nil || folded.Count != 999 || folded.Source != "10.0.0.1:5000" || !strings.Contains(folded.Reason, "999 more") {
		t.Fatalf("folded event %+v, want count 999 from 10.0.0.1:5000", folded)
	}
	keys, err := l.Read(ctx, audit.Query{Type: "key", Tenant: "acme", Since: start})
	if err != nil || len(keys) != 1 || keys[0].Type != audit.TypeKeyCreated {
		t.Fatalf("key events of acme: %+v %v", keys, err)
	}
	if later, err := l.Read(ctx, audit.Query{Since: time.Now().Add(time.Hour)}); err != nil || len(later) != 0 {
		t.Fatalf("events since an hour from now: %+v %v", later, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
