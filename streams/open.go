package streams

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Creating streams and KV buckets when several hub instances start at once on a fresh cluster.
//
// nats-server (seen with 2.15) answers only the first of two identical stream creates that race
// on the meta leader: the second proposal, applied after the first was answered, inherits its
// "responded" mark, so its requester gets no reply at all and waits out its whole context. A
// create therefore gets a short timeout of its own, and after a failure the stream or bucket is
// looked up again, since another instance (or the unanswered request) has usually made it.
const (
	// openAttempt bounds one create or lookup request.
	openAttempt = 5 * time.Second
	// openBudget bounds all attempts when ctx has no earlier deadline.
	openBudget = 60 * time.Second
)

// OpenBucket returns the KV bucket cfg.Bucket, creating it when it does not exist. An existing
// bucket whose settings match cfg is used as it is, so instances starting together do not
// rewrite it while the others read it; one whose settings differ (say, a changed TTL or replica
// count) is updated. Requests that fail or get no answer are retried, with a short timeout
// each and jittered backoff, until ctx ends or 60 s have passed.
func OpenBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.History == 0 {
		cfg.History = 1
	}
	kv, err := retry(ctx, func(ctx context.Context) (jetstream.KeyValue, error) {
		kv, err := js.KeyValue(ctx, cfg.Bucket)
		switch {
		case errors.Is(err, jetstream.ErrBucketNotFound):
			return js.CreateKeyValue(ctx, cfg)
		case err != nil:
			return nil, err
		}
		st, err := kv.Status(ctx)
		if err != nil {
			return nil, err
		}
		if bucketMatches(st.Config(), cfg) {
			return kv, nil
		}
		return js.UpdateKeyValue(ctx, cfg)
	})
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// bucketMatches reports whether an existing bucket has the settings the hub asks for.
func bucketMatches(have, want jetstream.KeyValueConfig) bool {
	return have.Description == want.Description && have.History == want.History &&
		have.TTL == want.TTL && have.Replicas == want.Replicas && have.Storage == want.Storage &&
		have.LimitMarkerTTL == want.LimitMarkerTTL &&
		(want.MaxBytes == 0 || have.MaxBytes == want.MaxBytes) &&
		(want.MaxValueSize == 0 || have.MaxValueSize == want.MaxValueSize)
}

// OpenStream creates stream cfg.Name or updates its configuration to cfg, retrying as
// OpenBucket does: a cluster that has just started answers "JetStream not ready" while its meta
// leader is elected, and a create racing another instance's may get no answer.
func OpenStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := retry(ctx, func(ctx context.Context) (jetstream.Stream, error) {
		return js.CreateOrUpdateStream(ctx, cfg)
	})
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", cfg.Name, err)
	}
	return s, nil
}

// retry runs attempt, each with its own openAttempt timeout, until it succeeds, fails with an
// error that another attempt cannot fix, or ctx (at most openBudget) ends; the error is then
// the last attempt's.
func retry[T any](ctx context.Context, attempt func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, openBudget)
	defer cancel()
	backoff := 100 * time.Millisecond
	for {
		actx, acancel := context.WithTimeout(ctx, openAttempt)
		v, err := attempt(actx)
		acancel()
		if err == nil || permanent(err) {
			return v, err
		}
		// Jitter spreads instances that failed together, so they do not race again in step.
		wait := backoff/2 + rand.N(backoff)
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(wait):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// permanent reports whether err is JetStream refusing the request (a bad or conflicting
// configuration, no permission), which asking again will not change. No answer at all, a
// cluster not ready or without a leader yet (503, 10009...), too few nodes up to place the
// replicas (10005), and a stream or bucket made or removed between a lookup and its use (404,
// 10058) are worth retrying.
func permanent(err error) bool {
	var jsErr jetstream.JetStreamError
	if !errors.As(err, &jsErr) || jsErr.APIError() == nil {
		return false
	}
	apiErr := jsErr.APIError()
	switch {
	case apiErr.Code == 503 || apiErr.Code == 408 || apiErr.Code == 404:
		return false
	case apiErr.ErrorCode == jetstream.JSErrCodeStreamNameInUse:
		return false
	}
	switch apiErr.ErrorCode {
	case 10004, 10005, 10007, 10009: // cluster incomplete, no peers, not assigned, not leader
		return false
	}
	return true
}
