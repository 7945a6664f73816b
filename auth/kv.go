package auth

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/streams"
)

// openBucket opens a KV bucket with one value per key, creating it when it does not exist (see
// streams.OpenBucket: an existing bucket is used as it is, and a create racing another hub
// instance's is retried).
func openBucket(ctx context.Context, js jetstream.JetStream, name, desc string, replicas int) (jetstream.KeyValue, error) {
	kv, err := streams.OpenBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket: name, Description: desc, History: 1, Storage: jetstream.FileStorage, Replicas: replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("%s bucket: %w", name, err)
	}
	return kv, nil
}

// view is a bucket of JSON records of type T with an in-memory copy on every instance, kept
// current by a KV watch (Run): API keys and tenants are read on every request and must follow
// changes made through any instance within moments.
type view[T any] struct {
	kv   jetstream.KeyValue
	log  *slog.Logger
	what string // names a record in logs ("API key")

	mu sync.RWMutex
	m  map[string]T
}

// openView opens (or creates) the bucket and loads every record.
func openView[T any](ctx context.Context, js jetstream.JetStream, bucket, desc, what string, replicas int, log *slog.Logger) (*view[T], error) {
	kv, err := openBucket(ctx, js, bucket, desc, replicas)
	if err != nil {
		return nil, err
	}
	v := &view[T]{kv: kv, log: log, what: what, m: map[string]T{}}
	if err := streams.LoadBucket(ctx, kv, v.apply); err != nil {
		return nil, err
	}
	return v, nil
}

// Run keeps the view current until ctx ends.
func (v *view[T]) Run(ctx context.Context) error { return streams.WatchBucket(ctx, v.kv, v.apply) }

func (v *view[T]) apply(e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		v.remove(e.Key())
		return
	}
	var rec T
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		v.log.Error("unreadable "+v.what+" record", "key", e.Key(), "err", err)
		return
	}
	v.set(e.Key(), rec)
}

func (v *view[T]) get(key string) (T, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	rec, ok := v.m[key]
	return rec, ok
}

// set records a change this instance made before its watch delivers it.
func (v *view[T]) set(key string, rec T) {
	v.mu.Lock()
	v.m[key] = rec
	v.mu.Unlock()
}

func (v *view[T]) remove(key string) {
	v.mu.Lock()
	delete(v.m, key)
	v.mu.Unlock()
}

// all returns the records that keep says to, in no order.
func (v *view[T]) all(keep func(T) bool) []T {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]T, 0, len(v.m))
	for _, rec := range v.m {
		if keep(rec) {
			out = append(out, rec)
		}
	}
	return out
}
