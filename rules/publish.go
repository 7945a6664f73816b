package rules

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/streams"
)

// publisher stores a rule's outputs in the IOT stream: asynchronously, with every
// acknowledgement collected before a checkpoint (flush). A publish that fails is retried with
// the same message ID until it is stored or the rule stops, so retries never duplicate.
type publisher struct {
	js      jetstream.JetStream
	pending []jetstream.PubAckFuture
	// outSeq is the highest stream sequence of an acknowledged output.
	outSeq uint64
	// skip holds IDs of outputs found in the stream after the last checkpoint: they were
	// published before a crash and are not published again when re-emitted.
	skip    map[string]struct{}
	skipped uint64
	onSkip  func()
}

const maxPending = 512

// publish queues env. It blocks only when maxPending publishes await acknowledgement.
func (p *publisher) publish(ctx context.Context, env *streams.Envelope) error {
	if _, ok := p.skip[env.ID]; ok {
		p.skipped++
		if p.onSkip != nil {
			p.onSkip()
		}
		return nil
	}
	msg, err := env.ToMsg()
	if err != nil {
		return fmt.Errorf("publish %s: %w", env.Topic, err)
	}
	f, err := p.js.PublishMsgAsync(msg, jetstream.WithStallWait(5*time.Second))
	if err != nil {
		return p.publishSync(ctx, msg)
	}
	p.pending = append(p.pending, f)
	if len(p.pending) >= maxPending {
		return p.flush(ctx)
	}
	return nil
}

// flush waits until every queued publish is stored.
func (p *publisher) flush(ctx context.Context) error {
	for i, f := range p.pending {
		select {
		case ack := <-f.Ok():
			p.outSeq = max(p.outSeq, ack.Sequence)
		case <-f.Err():
			if err := p.publishSync(ctx, f.Msg()); err != nil {
				p.pending = p.pending[i:]
				return err
			}
		case <-ctx.Done():
			p.pending = p.pending[i:]
			return ctx.Err()
		}
	}
	clear(p.pending)
	p.pending = p.pending[:0]
	return nil
}

func (p *publisher) publishSync(ctx context.Context, msg *nats.Msg) error {
	wait := 100 * time.Millisecond
	for {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ack, err := p.js.PublishMsg(pctx, msg)
		cancel()
		if err == nil {
			p.outSeq = max(p.outSeq, ack.Sequence)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("publish %s: %w", msg.Subject, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}
