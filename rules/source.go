package rules

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/window"
)

// item is one stored message, decoded once and shared (read-only) by every rule reading it.
type item struct {
	seq    uint64
	env    *streams.Envelope
	events []window.Event
}

// filterSubjects maps an MQTT filter to the NATS subject filters that cover it: "a/#" also
// matches "a" itself in MQTT, so it needs "iot.a" besides "iot.a.>". Exact MQTT matching is
// applied to each message afterwards.
func filterSubjects(filter string) ([]string, error) {
	subj, err := streams.FilterToSubject(filter)
	if err != nil {
		return nil, err
	}
	subs := []string{subj}
	if parent, ok := strings.CutSuffix(subj, ".>"); ok && parent != streams.SubjectPrefix {
		subs = append(subs, parent)
	}
	return subs, nil
}

// decodeMsg turns a stream message into an item, or nil for a message outside filter.
func decodeMsg(m jetstream.Msg, filter string, devs DeviceLookup) *item {
	env, err := streams.FromMsg(m.Subject(), m.Headers(), m.Data())
	if err != nil {
		return nil
	}
	md, err := m.Metadata()
	if err != nil {
		return nil
	}
	env.Seq = md.Sequence.Stream
	if !streams.MatchTopic(filter, env.Topic) {
		return &item{seq: env.Seq}
	}
	return &item{seq: env.Seq, env: env, events: decodeEvents(env, devs)}
}

// scanner reads ranges of the IOT stream with short-lived consumers.
type scanner struct {
	stream jetstream.Stream
}

// scan calls fn for the messages on subjects from sequence from (0: the first) up to those
// stored when the scan starts, stopping after sequence to (0: no bound) or when fn returns
// false.
func (s scanner) scan(ctx context.Context, subjects []string, from, to uint64, headersOnly bool, fn func(jetstream.Msg) bool) error {
	cfg := jetstream.ConsumerConfig{
		FilterSubjects:    subjects,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		InactiveThreshold: time.Minute,
		HeadersOnly:       headersOnly,
	}
	if from > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	return s.scanConfig(ctx, cfg, to, fn)
}

func (s scanner) scanConfig(ctx context.Context, cfg jetstream.ConsumerConfig, to uint64, fn func(jetstream.Msg) bool) error {
	cons, err := s.stream.CreateConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("read stream: %w", err)
	}
	name := cons.CachedInfo().Name
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = s.stream.DeleteConsumer(dctx, name)
		cancel()
	}()
	pending := cons.CachedInfo().NumPending
	for read := uint64(0); read < pending; {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch, err := cons.Fetch(int(min(pending-read, 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("read stream: %w", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			if to > 0 && md.Sequence.Stream > to {
				return nil
			}
			if !fn(m) {
				return nil
			}
			if md.NumPending == 0 {
				return nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("read stream: %w", err)
		}
		if got == 0 {
			return nil // messages vanished (retention) or the consumer is gone
		}
		read += uint64(got)
	}
	return nil
}

// feed is one ordered consumer on the IOT stream for one source filter, shared by every rule
// with that source: each message is read and decoded once, and batches of items go to each
// member's channel. A member that does not keep up slows its feed (back-pressure), never
// loses messages.
type feed struct {
	filter   string
	subjects []string
	start    uint64
	devs     DeviceLookup
	stream   jetstream.Stream
	log      interface{ Debug(string, ...any) }

	in      chan *item
	joinc   chan *member
	leavec  chan *member
	pending atomic.Uint64 // matching messages stored but not yet read
	members int           // guarded by feeds.mu
	cancel  context.CancelFunc
	done    chan struct{}
}

// member is a rule's subscription to a feed.
type member struct {
	ch     chan []*item
	gone   chan struct{}
	joined chan uint64 // the feed's last dispatched sequence when the member joined
	queued atomic.Int64
}

const (
	batchWait  = 2 * time.Millisecond
	feedBatch  = 256
	memberCap  = 16
	feedBuffer = 1024
)

// feeds owns the feeds of one manager.
type feeds struct {
	mu     sync.Mutex
	m      map[string]*feed
	wg     sync.WaitGroup
	stream jetstream.Stream
	devs   DeviceLookup
	log    interface{ Debug(string, ...any) }
}

// join subscribes to the feed for filter, starting one at sequence next if there is none. It
// returns the feed, the member and the feed's last dispatched sequence: items after it arrive on
// the member's channel, so the caller reads (next, that] itself if next is below it.
func (fs *feeds) join(ctx context.Context, filter string, next uint64) (*feed, *member, uint64, error) {
	fs.mu.Lock()
	f := fs.m[filter]
	if f == nil {
		subs, err := filterSubjects(filter)
		if err != nil {
			fs.mu.Unlock()
			return nil, nil, 0, err
		}
		f = &feed{filter: filter, subjects: subs, start: next, devs: fs.devs, stream: fs.stream, log: fs.log,
			in: make(chan *item, feedBuffer), joinc: make(chan *member), leavec: make(chan *member), done: make(chan struct{})}
		fctx, cancel := context.WithCancel(context.Background())
		f.cancel = cancel
		if err := f.startConsumer(fctx); err != nil {
			cancel()
			fs.mu.Unlock()
			return nil, nil, 0, err
		}
		fs.m[filter] = f
		fs.wg.Add(1)
		go func() {
			defer fs.wg.Done()
			f.dispatch(fctx)
		}()
	}
	f.members++
	fs.mu.Unlock()
	mb := &member{ch: make(chan []*item, memberCap), gone: make(chan struct{}), joined: make(chan uint64, 1)}
	select {
	case f.joinc <- mb:
	case <-ctx.Done():
		fs.leave(f, nil)
		return nil, nil, 0, ctx.Err()
	}
	return f, mb, <-mb.joined, nil
}

// leave ends a membership; the last member stops the feed.
func (fs *feeds) leave(f *feed, mb *member) {
	if mb != nil {
		close(mb.gone)
		select {
		case f.leavec <- mb:
		case <-f.done:
		}
	}
	fs.mu.Lock()
	f.members--
	if f.members == 0 {
		delete(fs.m, f.filter)
		f.cancel()
	}
	fs.mu.Unlock()
}

// wait waits for every feed to stop.
func (fs *feeds) wait() { fs.wg.Wait() }

func (f *feed) startConsumer(ctx context.Context) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: f.subjects, DeliverPolicy: jetstream.DeliverAllPolicy}
	if f.start > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, f.start
	}
	cons, err := f.stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("read %s: %w", f.filter, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		it := decodeMsg(m, f.filter, f.devs)
		if md, err := m.Metadata(); err == nil {
			f.pending.Store(md.NumPending)
		}
		if it == nil {
			return
		}
		select {
		case f.in <- it:
		case <-ctx.Done():
		}
	}, jetstream.PullMaxMessages(1000), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if ctx.Err() == nil && !errors.Is(err, jetstream.ErrNoHeartbeat) {
			f.log.Debug("rule source consumer", "filter", f.filter, "err", err)
		}
	}))
	if err != nil {
		return fmt.Errorf("read %s: %w", f.filter, err)
	}
	go func() {
		<-ctx.Done()
		cc.Stop()
	}()
	return nil
}

// dispatch hands items to members in batches until ctx ends.
func (f *feed) dispatch(ctx context.Context) {
	defer close(f.done)
	var members []*member
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	pos := f.start - 1
	if f.start == 0 {
		pos = 0
	}
	for {
		select {
		case <-ctx.Done():
			return
		case mb := <-f.joinc:
			members = append(members, mb)
			mb.joined <- pos
		case mb := <-f.leavec:
			for i, x := range members {
				if x == mb {
					members = append(members[:i], members[i+1:]...)
					break
				}
			}
		case it := <-f.in:
			// Collect for up to batchWait: fewer, larger batches cost the members less.
			batch := make([]*item, 1, feedBatch)
			batch[0] = it
			timer.Reset(batchWait)
		collect:
			for len(batch) < feedBatch {
				select {
				case it := <-f.in:
					batch = append(batch, it)
				case <-timer.C:
					break collect
				case <-ctx.Done():
					return
				}
			}
			timer.Stop()
			pos = batch[len(batch)-1].seq
			for _, mb := range members {
				mb.queued.Add(int64(len(batch)))
				select {
				case mb.ch <- batch:
				case <-mb.gone:
				case <-ctx.Done():
					return
				}
			}
		}
	}
}
