package simulator

import (
	"container/heap"
	"context"
	"errors"
	"io"
	"iter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/streams"
)

// Order is the order an Input yields envelopes in.
type Order int

const (
	// OrderStream is the order the hub stored the messages in: what a live consumer saw.
	OrderStream Order = iota
	// OrderEventTime sorts by event time (ties by stream sequence), within MaxDisorder.
	OrderEventTime
)

// InputOptions configure an Input.
type InputOptions struct {
	Order Order
	// MaxDisorder bounds the reordering buffer of OrderEventTime: an envelope is released once
	// an envelope more than MaxDisorder later in event time has been read, so envelopes that
	// come later than that are yielded out of order (and counted in Stats.Late). Zero sorts the
	// whole selection in memory.
	MaxDisorder time.Duration
}

// InputStats count what an Input has read.
type InputStats struct {
	Read    uint64 // envelopes yielded
	Skipped uint64 // messages read but outside the selection
	Late    uint64 // OrderEventTime: envelopes yielded after one with a later event time
}

// Input is the seam for running in-process consumers (rule backtests) over stored data: the
// envelopes of a Source — a time range or a scenario — one by one, in stream order or event-time
// order, without publishing anything. A backtest opens an Input, feeds each envelope to its rule
// engine and flushes the engine at io.EOF.
type Input struct {
	rd      *Reader
	opts    InputOptions
	pending envHeap
	maxSeen time.Time
	lastOut time.Time
	eof     bool
	stats   InputStats
}

// OpenInput starts reading src (from Resolver.Resolve or a scenario store).
func OpenInput(ctx context.Context, js jetstream.JetStream, src Source, opts InputOptions) (*Input, error) {
	rd, err := Open(ctx, js, src, 0)
	if err != nil {
		return nil, err
	}
	return &Input{rd: rd, opts: opts}, nil
}

// Next returns the next envelope, or io.EOF after the last.
func (in *Input) Next(ctx context.Context) (*streams.Envelope, error) {
	for {
		if in.opts.Order == OrderEventTime && in.pending.Len() > 0 {
			head := in.pending.envs[0]
			if in.eof || in.opts.MaxDisorder > 0 && head.EventTime.Before(in.maxSeen.Add(-in.opts.MaxDisorder)) {
				env := heap.Pop(&in.pending).(*streams.Envelope)
				return in.yield(env), nil
			}
		}
		if in.eof {
			return nil, io.EOF
		}
		m, err := in.rd.Next(ctx)
		in.stats.Skipped = in.rd.Skipped
		if errors.Is(err, io.EOF) {
			in.eof = true
			continue
		}
		if err != nil {
			return nil, err
		}
		env, err := m.Envelope()
		if err != nil {
			in.rd.Skipped++
			continue
		}
		if in.opts.Order == OrderStream {
			return in.yield(env), nil
		}
		if env.EventTime.After(in.maxSeen) {
			in.maxSeen = env.EventTime
		}
		heap.Push(&in.pending, env)
	}
}

func (in *Input) yield(env *streams.Envelope) *streams.Envelope {
	in.stats.Read++
	if env.EventTime.Before(in.lastOut) {
		in.stats.Late++
	} else {
		in.lastOut = env.EventTime
	}
	return env
}

// All iterates over the remaining envelopes; a non-nil error ends the iteration.
func (in *Input) All(ctx context.Context) iter.Seq2[*streams.Envelope, error] {
	return func(yield func(*streams.Envelope, error) bool) {
		for {
			env, err := in.Next(ctx)
			if errors.Is(err, io.EOF) {
				return
			}
			if !yield(env, err) || err != nil {
				return
			}
		}
	}
}

// Stats returns the counters so far.
func (in *Input) Stats() InputStats { return in.stats }

// Close releases the underlying consumer.
func (in *Input) Close() { in.rd.Close() }

type envHeap struct{ envs []*streams.Envelope }

func (h envHeap) Len() int { return len(h.envs) }
func (h envHeap) Less(i, j int) bool {
	a, b := h.envs[i], h.envs[j]
	if !a.EventTime.Equal(b.EventTime) {
		return a.EventTime.Before(b.EventTime)
	}
	return a.Seq < b.Seq
}
func (h envHeap) Swap(i, j int) { h.envs[i], h.envs[j] = h.envs[j], h.envs[i] }
func (h *envHeap) Push(x any)   { h.envs = append(h.envs, x.(*streams.Envelope)) }
func (h *envHeap) Pop() any {
	n := len(h.envs) - 1
	e := h.envs[n]
	h.envs[n] = nil
	h.envs = h.envs[:n]
	return e
}
