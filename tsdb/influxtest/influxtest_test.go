package influxtest_test

import (
	"context"
	"os"
	"testing"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	"github.com/influxdata/influxdb-client-go/v2/api/write"

	"github.com/tributary-iot/tributary/tsdb/influxtest"
)

func TestStartStopRestartKeepsData(t *testing.T) {
	t0 := time.Now()
	s := influxtest.Start(t)
	t.Logf("started in %v", time.Since(t0))
	c := influxdb2.NewClient(s.URL, s.Token)
	defer c.Close()
	ctx := context.Background()
	ts := time.Unix(1700000000, 0)
	p := write.NewPoint("m", map[string]string{"k": "v"}, map[string]any{"f": 1.5}, ts)
	if err := c.WriteAPIBlocking(s.Org, s.Bucket).WritePoint(ctx, p); err != nil {
		t.Fatalf("write: %v", err)
	}
	t1 := time.Now()
	s.Stop()
	t.Logf("stopped in %v", time.Since(t1))
	if s.Running() {
		t.Fatal("got running after Stop, want stopped")
	}
	if err := c.WriteAPIBlocking(s.Org, s.Bucket).WritePoint(ctx, p); err == nil {
		t.Fatal("write to a stopped server succeeded")
	}
	t2 := time.Now()
	s.Restart()
	t.Logf("restarted in %v", time.Since(t2))
	res, err := c.QueryAPI(s.Org).Query(ctx, `from(bucket: "`+s.Bucket+`") |> range(start: 2023-01-01T00:00:00Z, stop: 2024-01-01T00:00:00Z) |> filter(fn: (r) => r._measurement == "m")`)
	if err != nil {
		t.Fatalf("flux: %v", err)
	}
	n := 0
	for res.Next() {
		n++
		if got := res.Record().Value(); got != 1.5 {
			t.Errorf("got value %v, want 1.5", got)
		}
	}
	if res.Err() != nil {
		t.Fatalf("flux: %v", res.Err())
	}
	if n != 1 {
		t.Fatalf("got %d rows after restart, want 1", n)
	}
}

func TestMain(m *testing.M) { os.Exit(influxtest.Main(m)) }

func TestSharedDatabasesAreSeparate(t *testing.T) {
	s := influxtest.Shared(t)
	a, b := s.NewDB(t), s.NewDB(t)
	if a.Bucket == b.Bucket {
		t.Fatalf("got the same bucket %q twice", a.Bucket)
	}
	c := influxdb2.NewClient(a.URL, a.Token)
	defer c.Close()
	ctx := context.Background()
	p := write.NewPoint("m", nil, map[string]any{"f": 1.0}, time.Unix(1700000000, 0))
	if err := c.WriteAPIBlocking(a.Org, a.Bucket).WritePoint(ctx, p); err != nil {
		t.Fatalf("write: %v", err)
	}
	if s2 := influxtest.Shared(t); s2 != s {
		t.Fatal("Shared returned a second server")
	}
}
