package lease_test

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/streams/lease"
)

// Every instance runs the same code; the work runs on one of them at a time, and moves to
// another within about the TTL when its holder dies.
func Example() {
	ctx := context.Background()
	nc, err := nats.Connect("nats://127.0.0.1:4222")
	if err != nil {
		return
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	store, err := lease.Open(ctx, js, lease.Config{TTL: 5 * time.Second, Replicas: 3}, slog.Default())
	if err != nil {
		return
	}
	go store.Run(ctx) // watches the bucket and keeps this instance's member key alive
	store.Hold(ctx, "report.daily", func(ctx context.Context) {
		// Runs here while this instance holds the lease; ctx ends when the lease is lost
		// (context.Cause is lease.ErrLost), handed over (lease.ErrReleased), or Hold's ctx ends.
		<-ctx.Done()
	})
}
