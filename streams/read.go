package streams

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Page is a slice of stored messages, oldest first, with the cursor for the page before it.
type Page struct {
	Messages []*Envelope
	// Before is the sequence to pass as "before" for the next older page; 0 when there is none.
	Before uint64
}

// Latest returns up to limit of the newest messages on topics matching filters (MQTT-style)
// stored before sequence before (0: up to the newest), oldest first.
func (b *Bus) Latest(ctx context.Context, filters []string, limit int, before uint64) (Page, error) {
	var subjects []string
	if err := setFilters(&subjects, filters); err != nil {
		return Page{}, err
	}
	return latest(ctx, b.messages, subjects, limit, before, func(e *Envelope) bool { return MatchesAny(filters, e.Topic) })
}

// DeadLetters returns up to limit of the newest dead letters (of one device when device is not
// empty), oldest first. Each has Meta[MetaReason] set.
func (b *Bus) DeadLetters(ctx context.Context, device string, limit int, before uint64) (Page, error) {
	subj := deadLetterPrefix + ".>"
	if device != "" {
		subj = deadLetterPrefix + "." + EscapeToken(device)
	}
	return latest(ctx, b.dead, []string{subj}, limit, before, nil)
}

// latest finds, by binary search over start sequences, the first sequence from which exactly
// limit matching messages remain before the bound, then reads them with one ordered consumer.
// JetStream has no reverse iteration; the search costs O(log n) consumer creations.
func latest(ctx context.Context, s jetstream.Stream, subjects []string, limit int, before uint64, keep func(*Envelope) bool) (Page, error) {
	if limit <= 0 {
		return Page{}, errors.New("limit must be positive")
	}
	info, err := s.Info(ctx)
	if err != nil {
		return Page{}, fmt.Errorf("stream info: %w", err)
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	if info.State.Msgs == 0 {
		return Page{}, nil
	}
	if before == 0 || before > last+1 {
		before = last + 1
	}
	if before <= first {
		return Page{}, nil
	}
	pendingFrom := func(seq uint64) (uint64, error) {
		if seq > last {
			return 0, nil
		}
		cons, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{
			FilterSubjects:    subjects,
			DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:       seq,
			AckPolicy:         jetstream.AckNonePolicy,
			MemoryStorage:     true,
			InactiveThreshold: 5 * time.Second,
		})
		if err != nil {
			return 0, fmt.Errorf("count messages: %w", err)
		}
		n := cons.CachedInfo().NumPending
		_ = s.DeleteConsumer(ctx, cons.CachedInfo().Name)
		return n, nil
	}
	after, err := pendingFrom(before)
	if err != nil {
		return Page{}, err
	}
	total, err := pendingFrom(first)
	if err != nil {
		return Page{}, err
	}
	inRange := total - after
	if inRange == 0 {
		return Page{}, nil
	}
	start := first
	if inRange > uint64(limit) {
		// Largest start with count(start..before) >= limit.
		lo, hi := first, before-1
		for lo < hi {
			mid := lo + (hi-lo+1)/2
			n, err := pendingFrom(mid)
			if err != nil {
				return Page{}, err
			}
			if n-after >= uint64(limit) {
				lo = mid
			} else {
				hi = mid - 1
			}
		}
		start = lo
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: subjects,
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    start,
	})
	if err != nil {
		return Page{}, fmt.Errorf("read messages: %w", err)
	}
	var page Page
	want := min(inRange, uint64(limit))
	for uint64(len(page.Messages)) < want {
		batch, err := cons.Fetch(int(want)-len(page.Messages), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return Page{}, fmt.Errorf("read messages: %w", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			env, err := envelopeFromJS(m)
			if err != nil || env.Seq >= before {
				continue
			}
			if keep == nil || keep(env) {
				page.Messages = append(page.Messages, env)
			}
		}
		if batch.Error() != nil && !errors.Is(batch.Error(), jetstream.ErrNoMessages) {
			return Page{}, fmt.Errorf("read messages: %w", batch.Error())
		}
		if got == 0 {
			break
		}
	}
	if inRange > uint64(limit) && len(page.Messages) > 0 {
		page.Before = page.Messages[0].Seq
	}
	return page, nil
}

// Last returns the newest message stored on topic, or nil when there is none.
func (b *Bus) Last(ctx context.Context, topic string) (*Envelope, error) {
	subj, err := TopicToSubject(topic)
	if err != nil {
		return nil, err
	}
	raw, err := b.messages.GetLastMsgForSubject(ctx, subj)
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("last message on %s: %w", topic, err)
	}
	env, err := FromMsg(raw.Subject, raw.Header, raw.Data)
	if err != nil {
		return nil, err
	}
	env.Seq = raw.Sequence
	return env, nil
}
