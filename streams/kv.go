package streams

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// In-memory views of KV buckets (device registry, types, API keys, tenants, ...) load a bucket
// once and then follow its changes with these two.

// WatchBucket calls apply for every change of kv until ctx ends (initial values included).
func WatchBucket(ctx context.Context, kv jetstream.KeyValue, apply func(jetstream.KeyValueEntry)) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("watch %s: %w", kv.Bucket(), err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("watch " + kv.Bucket() + ": ended")
			}
			if e != nil {
				apply(e)
			}
		}
	}
}

// LoadBucket calls apply for every current entry of kv and returns once all are read. It reads
// them with one watcher (a single consumer streaming the bucket) rather than a Get per key,
// which matters with 100,000 devices.
func LoadBucket(ctx context.Context, kv jetstream.KeyValue, apply func(jetstream.KeyValueEntry)) error {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("read %s: %w", kv.Bucket(), err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("read %s: watcher closed", kv.Bucket())
			}
			if e == nil {
				return nil // the end of the initial values
			}
			apply(e)
		}
	}
}
