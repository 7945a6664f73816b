package auth

import (
	"context"
	"errors"
	"fmt"

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

// watch calls apply for every entry of kv and every later change until ctx ends. When ready
// is not nil it is closed once the initial values are applied.
func watch(ctx context.Context, kv jetstream.KeyValue, ready chan<- struct{}, apply func(jetstream.KeyValueEntry)) error {
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
			if e == nil {
				if ready != nil {
					close(ready)
					ready = nil
				}
				continue
			}
			apply(e)
		}
	}
}

// load applies every current entry once, so a store is usable as soon as its constructor
// returns.
func load(ctx context.Context, kv jetstream.KeyValue, apply func(jetstream.KeyValueEntry)) error {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := make(chan struct{})
	errc := make(chan error, 1)
	go func() { errc <- watch(lctx, kv, ready, apply) }()
	select {
	case <-ready:
		cancel()
		<-errc
		return nil
	case err := <-errc:
		if err == nil {
			err = ctx.Err()
		}
		return fmt.Errorf("read %s: %w", kv.Bucket(), err)
	}
}
