package streams_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/natscluster"
)

// Hubs started at the same moment on a fresh 3-node cluster (a 2-replica Deployment's first
// rollout) all come up: each creates the R3 streams and a KV bucket while the others do the
// same, and none waits on another's creation forever.
func TestConcurrentStartOnFreshCluster(t *testing.T) {
	t.Parallel()
	c := natscluster.ForTest(t, 3)
	const hubs = 3
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	start := make(chan struct{})
	errs := make([]error, hubs)
	took := make([]time.Duration, hubs)
	var wg sync.WaitGroup
	for i := range hubs {
		wg.Go(func() {
			<-start
			t0 := time.Now()
			defer func() { took[i] = time.Since(t0) }()
			b, err := streams.New(ctx, streams.Config{URL: c.URL(), Replicas: 3}, log)
			if err != nil {
				errs[i] = fmt.Errorf("streams.New: %w", err)
				return
			}
			t.Cleanup(b.Close)
			if _, err := devices.New(ctx, b.JetStream(), devices.Config{Replicas: 3}, log); err != nil {
				errs[i] = fmt.Errorf("devices.New: %w", err)
			}
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("hub %d after %v: %v", i, took[i].Round(time.Millisecond), err)
		} else if took[i] > 30*time.Second {
			t.Errorf("hub %d took %v to start, want under 30s", i, took[i].Round(time.Millisecond))
		}
	}
}
