package streams_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

// OpenBucket creates a missing bucket, opens an existing one as it is (its values stay), and
// updates one whose settings changed.
func TestOpenBucket(t *testing.T) {
	b := streamstest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	js := b.JetStream()
	cfg := jetstream.KeyValueConfig{Bucket: "open_test", Description: "d", TTL: time.Hour, Storage: jetstream.FileStorage}
	kv, err := streams.OpenBucket(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	again, err := streams.OpenBucket(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := again.Get(ctx, "k"); err != nil || string(e.Value()) != "v" {
		t.Fatalf("reopened bucket: k = %v, %v; want v", e, err)
	}
	cfg.TTL = 2 * time.Hour
	if _, err := streams.OpenBucket(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	st, err := again.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != 2*time.Hour || st.History() != 1 {
		t.Fatalf("updated bucket: TTL %v history %d, want 2h and 1", st.TTL(), st.History())
	}
	if e, err := again.Get(ctx, "k"); err != nil || string(e.Value()) != "v" {
		t.Fatalf("updated bucket: k = %v, %v; want v", e, err)
	}
}

// A configuration JetStream refuses fails at once, naming the bucket, rather than being retried
// until the context ends.
func TestOpenBucketRefusedFailsFast(t *testing.T) {
	b := streamstest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err := streams.OpenBucket(ctx, b.JetStream(), jetstream.KeyValueConfig{Bucket: "refused", Replicas: 3, Storage: jetstream.FileStorage})
	if err == nil || !strings.Contains(err.Error(), "open bucket refused") {
		t.Fatalf("err = %v, want one naming bucket refused", err)
	}
	t.Log(err)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("refused after %v, want at once", d)
	}
}
