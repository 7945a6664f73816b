package lease_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/streams/lease"
	"github.com/tributary-iot/tributary/streams/natscluster"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

// TestLeaseOnNATSCluster holds a lease in an R3 bucket on a 3-node NATS cluster while each node
// in turn stops and restarts: the job never runs twice at once, and after each stop it runs
// again within a few seconds (on the same instance, or another after a loss).
func TestLeaseOnNATSCluster(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs a 3-node NATS cluster")
	}
	c := natscluster.ForTest(t, 3)
	const ttl = 3 * time.Second
	l := newLog(t)
	for _, h := range []string{"a", "b"} {
		nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, _ := jetstream.New(nc)
		s, err := lease.Open(context.Background(), js, lease.Config{TTL: ttl, Holder: h, Replicas: 3}, streamstest.Logger(t))
		if err != nil {
			t.Fatalf("open on the cluster: %v", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.Run(ctx)
		}()
		t.Cleanup(func() { cancel(); <-done })
		hold(t, &instance{s: s}, "rule.r", l)
	}
	eventually(t, 10*time.Second, func() bool { return l.runner("rule.r") != "" }, "nobody runs the job")
	for i := range c.Len() {
		c.Stop(i)
		stopped := time.Now()
		// Give renewals time to hit the missing node (and a Raft election, if it led).
		time.Sleep(ttl)
		eventually(t, 20*time.Second, func() bool { return l.runner("rule.r") != "" }, "nobody runs the job with node %s stopped", c.Name(i))
		t.Logf("node %s stopped: %s runs the job %v later", c.Name(i), l.runner("rule.r"), time.Since(stopped).Round(time.Millisecond))
		if err := c.Restart(i); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := c.WaitReady(ctx)
		cancel()
		if err != nil {
			t.Fatalf("cluster not ready after restarting %s: %v", c.Name(i), err)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("runs, in order: %v", l.starts)
}
