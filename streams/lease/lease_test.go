package lease_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/lease"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

const ttl = time.Second

// instance is one store on a NATS connection of its own, as a hub instance would have.
type instance struct {
	s      *lease.Store
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan struct{}
}

func start(t *testing.T, bus *streams.Bus, holder string) *instance {
	t.Helper()
	return startTTL(t, bus, holder, ttl)
}

func startTTL(t *testing.T, bus *streams.Bus, holder string, ttl time.Duration) *instance {
	t.Helper()
	nc, err := nats.Connect(bus.ClientURL(), nats.MaxReconnects(0))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := lease.Open(context.Background(), js, lease.Config{TTL: ttl, Holder: holder}, streamstest.Logger(t))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{s: s, nc: nc, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(in.done)
		if err := s.Run(ctx); err != nil {
			t.Errorf("run %s: %v", holder, err)
		}
	}()
	t.Cleanup(func() { in.stop() })
	return in
}

func (in *instance) stop() {
	in.cancel()
	<-in.done
	in.nc.Close()
}

// log records who runs the work, failing on overlap.
type log struct {
	t      *testing.T
	mu     sync.Mutex
	active map[string]string // lease → holder running it
	starts []string          // holders in order, per lease
	causes map[string]error  // last cancellation cause per holder
	at     map[string]time.Time
}

func newLog(t *testing.T) *log {
	return &log{t: t, active: map[string]string{}, causes: map[string]error{}, at: map[string]time.Time{}}
}

func (l *log) work(name, holder string) func(ctx context.Context) {
	return func(ctx context.Context) {
		l.mu.Lock()
		if o, ok := l.active[name]; ok {
			l.t.Errorf("%s runs %s while %s still does", holder, name, o)
		}
		l.active[name] = holder
		l.starts = append(l.starts, holder)
		l.at[holder+"/start"] = time.Now()
		l.mu.Unlock()
		<-ctx.Done()
		l.mu.Lock()
		delete(l.active, name)
		l.causes[holder] = context.Cause(ctx)
		l.at[holder+"/stop"] = time.Now()
		l.mu.Unlock()
	}
}

func (l *log) runner(name string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.active[name]
}

func hold(t *testing.T, in *instance, name string, l *log) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := in.s.Hold(ctx, name, l.work(name, in.s.Holder())); err != nil {
			t.Errorf("hold: %v", err)
		}
	}()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

func eventually(t *testing.T, d time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf(format, args...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOneHolderUnderContention(t *testing.T) {
	t.Parallel()
	bus := streamstest.New(t)
	l := newLog(t)
	var ins []*instance
	stops := map[string]func(){}
	for i := range 4 {
		in := start(t, bus, fmt.Sprintf("h%d", i))
		ins = append(ins, in)
		stops[in.s.Holder()] = hold(t, in, "rule.job", l)
	}
	// Stop whoever holds it, three times: each time exactly one other instance takes over, and
	// every instance agrees on the owner.
	for round := range 3 {
		var owner string
		eventually(t, 5*time.Second, func() bool { owner = l.runner("rule.job"); return owner != "" }, "round %d: nobody runs the job", round)
		for _, in := range ins {
			if _, gone := stops[in.s.Holder()]; !gone {
				continue
			}
			eventually(t, 5*time.Second, func() bool { return in.s.Owner("rule.job") == owner }, "%s sees owner %q, want %q", in.s.Holder(), in.s.Owner("rule.job"), owner)
		}
		stops[owner]()
		delete(stops, owner)
		if l.runner("rule.job") == owner {
			t.Fatalf("round %d: %s still runs the job after Hold returned", round, owner)
		}
	}
	eventually(t, 5*time.Second, func() bool { return l.runner("rule.job") != "" }, "the last instance never ran the job")
	l.mu.Lock()
	defer l.mu.Unlock()
	if slices.Sort(l.starts); len(slices.Compact(l.starts)) != 4 {
		t.Errorf("got runs by %v, want every instance", l.starts)
	}
}

func TestReleaseOnCancel(t *testing.T) {
	t.Parallel()
	bus := streamstest.New(t)
	l := newLog(t)
	// A long TTL: a takeover well within it can only come from the release.
	const ttl = 4 * time.Second
	a, b := startTTL(t, bus, "a", ttl), startTTL(t, bus, "b", ttl)
	stopA := hold(t, a, "rule.r", l)
	eventually(t, 5*time.Second, func() bool { return l.runner("rule.r") == "a" }, "a does not run the job")
	hold(t, b, "rule.r", l)
	stopA()
	l.mu.Lock()
	if c := l.causes["a"]; !errors.Is(c, context.Canceled) {
		t.Errorf("a's work ended with cause %v, want context.Canceled", c)
	}
	stoppedAt := l.at["a/stop"]
	l.mu.Unlock()
	if len(a.s.Held()) != 0 {
		t.Errorf("a still lists %v as held", a.s.Held())
	}
	// Released, not expired: b takes it well within the TTL.
	eventually(t, ttl/3, func() bool { return l.runner("rule.r") == "b" }, "b did not take the released lease within %v", ttl/3)
	l.mu.Lock()
	t.Logf("handover after release took %v", l.at["b/start"].Sub(stoppedAt))
	l.mu.Unlock()
	if got := b.s.Held(); len(got) != 1 || got[0] != "rule.r" {
		t.Errorf("b holds %v, want [rule.r]", got)
	}
}

// TestTakeoverAfterHolderDies cuts the holder off NATS: it stops its work before the lease
// expires (cause ErrLost), and another instance takes over within about the TTL.
func TestTakeoverAfterHolderDies(t *testing.T) {
	t.Parallel()
	bus := streamstest.New(t)
	l := newLog(t)
	a := start(t, bus, "a")
	hold(t, a, "rule.r", l)
	eventually(t, 5*time.Second, func() bool { return l.runner("rule.r") == "a" }, "a does not run the job")
	b := start(t, bus, "b")
	hold(t, b, "rule.r", l)
	eventually(t, 5*time.Second, func() bool { return b.s.Owner("rule.r") == "a" }, "b does not see a as owner")
	time.Sleep(ttl / 2) // land the death somewhere inside a renewal period
	died := time.Now()
	a.nc.Close() // a can no longer renew
	eventually(t, 3*ttl, func() bool { return l.runner("rule.r") == "b" }, "b did not take over")
	l.mu.Lock()
	defer l.mu.Unlock()
	if c := l.causes["a"]; !errors.Is(c, lease.ErrLost) {
		t.Errorf("a's work ended with cause %v, want ErrLost", c)
	}
	aStop, bStart := l.at["a/stop"], l.at["b/start"]
	if !aStop.Before(bStart) {
		t.Errorf("a stopped at %v, after b started at %v", aStop, bStart)
	}
	took := bStart.Sub(died)
	t.Logf("a stopped %v after it was cut off; b took over %v after", aStop.Sub(died), took)
	if took > 2*ttl {
		t.Errorf("takeover took %v, want about the TTL %v", took, ttl)
	}
}

// TestLeasesSpread: leases wanted by every instance end up evenly spread, also over an
// instance that joins later.
func TestLeasesSpread(t *testing.T) {
	t.Parallel()
	bus := streamstest.New(t)
	l := newLog(t)
	names := []string{"rule.a", "rule.b", "rule.c", "rule.d", "rule.e", "rule.f"}
	var ins []*instance
	add := func(h string) {
		in := start(t, bus, h)
		ins = append(ins, in)
		for _, n := range names {
			hold(t, in, n, l)
		}
	}
	add("x")
	eventually(t, 5*time.Second, func() bool { return len(ins[0].s.Held()) == 6 }, "x holds %v, want all six", ins[0].s.Held())
	add("y")
	eventually(t, 15*time.Second, func() bool { return len(ins[0].s.Held()) == 3 && len(ins[1].s.Held()) == 3 },
		"x holds %v, y %v; want three each", ins[0].s.Held(), ins[1].s.Held())
	add("z")
	eventually(t, 15*time.Second, func() bool {
		return len(ins[0].s.Held()) == 2 && len(ins[1].s.Held()) == 2 && len(ins[2].s.Held()) == 2
	}, "x holds %v, y %v, z %v; want two each", ins[0].s.Held(), ins[1].s.Held(), ins[2].s.Held())
	// A lease handed over shows in Held as soon as it is taken; its work starts a moment later.
	idle := func() []string {
		var out []string
		for _, n := range names {
			if l.runner(n) == "" {
				out = append(out, n)
			}
		}
		return out
	}
	eventually(t, 5*time.Second, func() bool { return len(idle()) == 0 }, "nobody runs %v", idle())
}

// TestKindsSpreadSeparately: an instance holding a lease of another kind (the retention pass)
// still gets its share of the rules: two rules on two instances run one on each.
func TestKindsSpreadSeparately(t *testing.T) {
	t.Parallel()
	bus := streamstest.New(t)
	l := newLog(t)
	x := start(t, bus, "x")
	for _, n := range []string{"retention", "rule.a", "rule.b"} {
		hold(t, x, n, l)
	}
	eventually(t, 5*time.Second, func() bool { return len(x.s.Held()) == 3 }, "x holds %v, want all three", x.s.Held())
	// y joins: counting all kinds together, x (3) would hand over one lease, possibly the
	// retention one, and stop at 2 against 1 with both rules still on x.
	y := start(t, bus, "y")
	for _, n := range []string{"retention", "rule.a", "rule.b"} {
		hold(t, y, n, l)
	}
	eventually(t, 15*time.Second, func() bool {
		a, b := l.runner("rule.a"), l.runner("rule.b")
		return a != "" && b != "" && a != b
	}, "rule.a on %q, rule.b on %q; want one on each instance", l.runner("rule.a"), l.runner("rule.b"))
}

// TestNoGoroutineLeak runs the full cycle and checks the goroutines are gone. Not parallel, so
// other tests' goroutines do not count.
func TestNoGoroutineLeak(t *testing.T) {
	bus := streamstest.New(t)
	// A first instance creates the bucket, which starts the server's goroutines of its stream.
	start(t, bus, "warmup").stop()
	time.Sleep(100 * time.Millisecond)
	before := runtime.NumGoroutine()
	l := newLog(t)
	a, b := start(t, bus, "a"), start(t, bus, "b")
	stopA, stopB := hold(t, a, "rule.r", l), hold(t, b, "rule.r", l)
	eventually(t, 5*time.Second, func() bool { return l.runner("rule.r") != "" }, "nobody runs the job")
	stopA()
	stopB()
	a.stop()
	b.stop()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d, want at most %d as before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		cfg  lease.Config
		want string
	}{
		{lease.Config{TTL: 100 * time.Millisecond}, "ttl 100ms is below 300ms"},
		{lease.Config{TTL: time.Hour}, "ttl 1h0m0s is above 10m"},
		{lease.Config{Replicas: 7}, "replicas 7 out of range"},
		{lease.Config{Holder: "a.b"}, `holder "a.b" may only use`},
	} {
		err := c.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %v, want %q", c.cfg, err, c.want)
		}
	}
	if err := (lease.Config{}).Validate(); err != nil {
		t.Errorf("zero config: %v", err)
	}
}
