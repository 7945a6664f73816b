package devices

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/streams"
)

// pinnedGroup is the priority group of the hub's durable consumers: JetStream pins the
// consumer to one hub instance at a time (another takes over when it stops pulling), so
// messages are handled in stream order, once, whichever instance is alive.
const pinnedGroup = "hub"

// consume runs a durable, pinned consumer of the IOT stream on subjects until ctx ends,
// calling fn for each message in order. A message fn fails is retried, first in place (so
// order holds), then by redelivery (up to maxDeliver times, then skipped with a warning); fn's
// errors must be for transient trouble only. The pinned priority policy needs NATS 2.11 or
// later.
func consume(ctx context.Context, js jetstream.JetStream, durable string, subjects []string, log *slog.Logger, fn func(context.Context, *streams.Envelope) error) error {
	const maxDeliver = 5
	cons, err := js.CreateOrUpdateConsumer(ctx, streams.StreamMessages, jetstream.ConsumerConfig{
		Durable:        durable,
		Description:    "Tributary " + durable,
		FilterSubjects: subjects,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        30 * time.Second,
		MaxDeliver:     maxDeliver,
		MaxAckPending:  256, // handled in order: one pinned instance, one message at a time
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PinnedTTL:      10 * time.Second,
		PriorityGroups: []string{pinnedGroup},
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopping before it started
		}
		return fmt.Errorf("consumer %s: %w", durable, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		env, err := streams.FromMsg(m.Subject(), m.Headers(), m.Data())
		if err != nil {
			log.Warn("undecodable message skipped", "consumer", durable, "subject", m.Subject(), "err", err)
			_ = m.Term()
			return
		}
		if md, err := m.Metadata(); err == nil {
			env.Seq = md.Sequence.Stream
			if md.NumDelivered >= maxDeliver {
				defer func() {
					log.Warn("message skipped after repeated failures", "consumer", durable, "topic", env.Topic, "seq", env.Seq)
				}()
			}
		}
		// Transient trouble is retried here, holding the messages behind it, so that order is
		// kept; only after that does the message go back to JetStream for redelivery.
		for attempt, wait := 0, 100*time.Millisecond; attempt < 4; attempt, wait = attempt+1, wait*2 {
			hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err = fn(hctx, env)
			cancel()
			if err == nil || ctx.Err() != nil {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
		}
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("message handling failed; redelivery later", "consumer", durable, "topic", env.Topic, "err", err)
			}
			_ = m.NakWithDelay(time.Second)
			return
		}
		_ = m.Ack()
	}, jetstream.PullPriorityGroup(pinnedGroup), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if ctx.Err() == nil && !errors.Is(err, jetstream.ErrNoHeartbeat) {
			log.Debug("consumer", "consumer", durable, "err", err)
		}
	}))
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("consume %s: %w", durable, err)
	}
	<-ctx.Done()
	cc.Stop()
	<-cc.Closed()
	return nil
}
