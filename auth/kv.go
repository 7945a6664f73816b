package auth

import (
	"context"
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
