package admission

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/devices"
)

// clock is a fake time source for the controller and its guard.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTest(t testing.TB, cfg Config, dir Directory) (*Controller, *clock) {
	t.Helper()
	c, err := New(cfg, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	c.now, c.auth.now = clk.now, clk.now
	return c, clk
}

func TestParseRate(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Rate
		err  bool
	}{
		{"100/s", 100, false}, {"100", 100, false}, {"6000/m", 100, false}, {"3600/h", 1, false},
		{"0.5/s", 0.5, false}, {"0", 0, false}, {"off", 0, false}, {"", 0, false},
		{"-1/s", 0, true}, {"ten/s", 0, true}, {"10/d", 0, true}, {"1e10", 0, true},
	} {
		got, err := ParseRate(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
	if s := Rate(100).String(); s != "100/s" {
		t.Errorf("String() = %q, want 100/s", s)
	}
}

// TestPublishHoldsTheRate offers ten times a device's rate for ten (fake) seconds and checks
// how many messages get in: rate × time + burst.
func TestPublishHoldsTheRate(t *testing.T) {
	c, clk := newTest(t, Config{Device: devices.Limits{Rate: 100, Burst: 10}}, nil)
	ctx := context.Background()
	admitted, refused := 0, 0
	for range 10_000 { // 1000/s for 10s
		err := c.Publish(ctx, "test", "d1", 10, false)
		switch {
		case err == nil:
			admitted++
		case errors.Is(err, ErrRateLimited):
			refused++
		default:
			t.Fatalf("Publish: %v", err)
		}
		clk.add(time.Millisecond)
	}
	if want := 100*10 + 10; admitted < want-2 || admitted > want+2 {
		t.Errorf("admitted %d of 10000 at 100/s burst 10 over 10s, want %d", admitted, want)
	}
	if admitted+refused != 10_000 {
		t.Errorf("admitted %d + refused %d, want 10000", admitted, refused)
	}
}

// TestPublishConcurrentHoldsTheRate: many goroutines refused at once must not lose the tokens
// they briefly reserved. The clock is fake and moves 1ms at a time, only once the goroutines
// have tried at least 16 times since the last step, so a starved CPU cannot lose tokens to a
// full bucket: whatever is missing was lost by the controller.
func TestPublishConcurrentHoldsTheRate(t *testing.T) {
	t.Parallel()
	c, clk := newTest(t, Config{Tenant: devices.Limits{Rate: 200, Burst: 20}}, nil)
	var admitted, attempts atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			id := fmt.Sprint("d", g)
			for !stop.Load() {
				attempts.Add(1)
				if c.Publish(context.Background(), "test", id, 1, false) == nil {
					admitted.Add(1)
				}
			}
		})
	}
	for range 250 { // a quarter of a fake second
		for seen := attempts.Load(); attempts.Load() < seen+16; {
			runtime.Gosched()
		}
		clk.add(time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	if got := admitted.Load() - 20; got < 49 || got > 51 {
		t.Errorf("16 goroutines against 200/s for 250ms: admitted %d beyond the burst, want 50", got)
	}
}

func TestPublishTenantIsShared(t *testing.T) {
	c, clk := newTest(t, Config{Tenant: devices.Limits{Rate: 50, Burst: 1}}, nil)
	admitted := 0
	for i := range 2000 { // four devices, 1000/s together, for 2s
		if c.Publish(context.Background(), "test", []string{"a", "b", "c", "d"}[i%4], 1, false) == nil {
			admitted++
		}
		clk.add(time.Millisecond)
	}
	if admitted < 99 || admitted > 102 {
		t.Errorf("tenant admitted %d in 2s at 50/s, want ~101", admitted)
	}
	_ = c.Publish(context.Background(), "test", "a", 1, false) // takes a token accrued since, if any
	err := c.Publish(context.Background(), "test", "b", 1, false)
	if !errors.Is(err, ErrQuotaExceeded) {
		t.Errorf("over the tenant rate: %v, want ErrQuotaExceeded", err)
	}
}

func TestMostSpecificLimitWins(t *testing.T) {
	dir := DirectoryFunc(func(id string) Profile {
		switch id {
		case "typed":
			return Profile{Type: devices.Limits{Rate: 2, Burst: 2}}
		case "own":
			return Profile{Type: devices.Limits{Rate: 2, Burst: 2}, Device: devices.Limits{Burst: 5}}
		case "free":
			return Profile{Type: devices.Limits{Rate: 2}, Device: devices.Limits{Rate: -1}}
		}
		return Profile{}
	})
	c, _ := newTest(t, Config{Device: devices.Limits{Rate: 1, Burst: 1}}, dir)
	for _, tt := range []struct {
		id   string
		want int // messages admitted at one instant
	}{{"plain", 1}, {"typed", 2}, {"own", 5}, {"free", 100}} {
		n := 0
		for range 100 {
			if c.Publish(context.Background(), "test", tt.id, 1, false) == nil {
				n++
			}
		}
		if n != tt.want {
			t.Errorf("%s: admitted %d at once, want %d", tt.id, n, tt.want)
		}
	}
}

func TestLimitChangesApplyWithinASecond(t *testing.T) {
	var mu sync.Mutex
	lim := devices.Limits{Rate: 1, Burst: 1}
	dir := DirectoryFunc(func(string) Profile { mu.Lock(); defer mu.Unlock(); return Profile{Device: lim} })
	c, clk := newTest(t, Config{}, dir)
	if c.Publish(context.Background(), "test", "d", 1, false) != nil || c.Publish(context.Background(), "test", "d", 1, false) == nil {
		t.Fatal("burst 1: want the first message in and the second out")
	}
	mu.Lock()
	lim = devices.Limits{Rate: 1, Burst: 50}
	mu.Unlock()
	clk.add(1100 * time.Millisecond)
	n := 0
	for range 100 {
		if c.Publish(context.Background(), "test", "d", 1, false) == nil {
			n++
		}
	}
	if n != 50 {
		t.Errorf("after raising the burst to 50: admitted %d at once, want 50", n)
	}
}

func TestPublishWaitsUpToMaxDelay(t *testing.T) {
	c, err := New(Config{Device: devices.Limits{Rate: 20, Burst: 1}, MaxDelay: 200 * time.Millisecond}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Publish(ctx, "test", "d", 1, true); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.Publish(ctx, "test", "d", 1, true); err != nil {
		t.Fatalf("second message at 20/s with a 200ms delay allowed: %v", err)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("second message admitted after %v, want it to wait ~50ms", d)
	}
	slow, _ := New(Config{Device: devices.Limits{Rate: 1, Burst: 1}, MaxDelay: 200 * time.Millisecond}, nil, nil)
	_ = slow.Publish(ctx, "test", "d", 1, true)
	err = slow.Publish(ctx, "test", "d", 1, true)
	var ex *Exceeded
	if !errors.As(err, &ex) || !errors.Is(err, ErrRateLimited) || ex.RetryAfter < 500*time.Millisecond {
		t.Errorf("at 1/s the second message needs ~1s > max delay: got %v, want ErrRateLimited with RetryAfter ~1s", err)
	}
	// The refusal took nothing: after the second, exactly one message fits again.
	time.Sleep(time.Second)
	if err := slow.Publish(ctx, "test", "d", 1, false); err != nil {
		t.Errorf("a refused message used up tokens: %v", err)
	}
}

func TestByteLimits(t *testing.T) {
	c, _ := newTest(t, Config{Device: devices.Limits{BytesRate: 100, BytesBurst: 1000}}, nil)
	ctx := context.Background()
	if err := c.Publish(ctx, "test", "d", 900, false); err != nil {
		t.Fatal(err)
	}
	err := c.Publish(ctx, "test", "d", 900, false)
	var ex *Exceeded
	if !errors.As(err, &ex) || !errors.Is(err, ErrQuotaExceeded) || ex.RetryAfter < 7*time.Second {
		t.Errorf("second 900 bytes at 100 B/s: %v, want ErrQuotaExceeded retry ~8s", err)
	}
	err = c.Publish(ctx, "test", "d", 5000, false)
	if !errors.As(err, &ex) || !errors.Is(err, ErrQuotaExceeded) || ex.RetryAfter != 0 {
		t.Errorf("5000 bytes over a burst of 1000: %v, want ErrQuotaExceeded that no wait cures", err)
	}
	// The default byte burst admits the largest payload.
	c2, _ := newTest(t, Config{Device: devices.Limits{BytesRate: 10}, MaxPayload: 4096}, nil)
	if err := c2.Publish(ctx, "test", "d", 4096, false); err != nil {
		t.Errorf("a max-payload message at a small byte rate: %v", err)
	}
}

func TestConnectLimits(t *testing.T) {
	dir := DirectoryFunc(func(id string) Profile {
		if id == "x" {
			return Profile{Tenant: "other"}
		}
		return Profile{Tenant: "acme"}
	})
	c, _ := newTest(t, Config{Device: devices.Limits{MaxConnections: 1}, Tenant: devices.Limits{MaxConnections: 2}, MaxConnections: 4}, dir)
	r1, err := c.Connect("a", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Connect("a", false); !errors.Is(err, ErrTooManyConnections) {
		t.Errorf("second connection of a device limited to 1: %v", err)
	}
	rt, err := c.Connect("a", true)
	if err != nil {
		t.Errorf("a takeover is always admitted: %v", err)
	}
	rt()
	r2, _ := c.Connect("b", false)
	if _, err := c.Connect("c", false); !errors.Is(err, ErrTooManyConnections) {
		t.Errorf("third device of a tenant limited to 2: %v", err)
	}
	if n := c.Connections("acme"); n != 2 {
		t.Errorf("Connections(acme) = %d, want 2", n)
	}
	rx, err := c.Connect("x", false)
	if err != nil {
		t.Errorf("another tenant: %v", err)
	}
	ra, _ := c.Connect("", false)
	if _, err := c.Connect("", false); !errors.Is(err, ErrTooManyConnections) {
		t.Errorf("fifth connection with a hub limit of 4: %v", err)
	}
	r1()
	r1() // twice: no effect
	if _, err := c.Connect("c", false); err != nil {
		t.Errorf("after a release: %v", err)
	}
	r2()
	rx()
	ra()
	if n := c.Connections("acme"); n != 1 {
		t.Errorf("Connections(acme) = %d after releases, want 1", n)
	}
}

func TestGuardThrottlesPerAddress(t *testing.T) {
	c, clk := newTest(t, Config{AuthMaxFailures: 3, AuthWindow: time.Minute}, nil)
	g := c.Auth()
	for range 3 {
		if _, blocked := g.Blocked("test", "10.0.0.1:1000"); blocked {
			t.Fatal("blocked before the failures")
		}
		g.Failed("test", "10.0.0.1:1000")
	}
	retry, blocked := g.Blocked("test", "10.0.0.1:2000")
	if !blocked || retry != time.Minute {
		t.Errorf("after 3 failures: blocked %v retry %v, want blocked for 1m (any port)", blocked, retry)
	}
	g.Succeeded("10.0.0.1:3000") // cannot lift a block
	if _, blocked := g.Blocked("test", "10.0.0.1:1"); !blocked {
		t.Error("a success lifted the block")
	}
	if _, blocked := g.Blocked("test", "10.0.0.2:1000"); blocked {
		t.Error("another address is blocked too")
	}
	clk.add(time.Minute + time.Millisecond)
	if _, blocked := g.Blocked("test", "10.0.0.1:1000"); blocked {
		t.Error("still blocked after the window")
	}
	// Failures spread wider than the window never block.
	for range 10 {
		g.Failed("test", "[::1]:5")
		clk.add(31 * time.Second)
	}
	if _, blocked := g.Blocked("test", "[::1]:5"); blocked {
		t.Error("2 failures a minute blocked with a limit of 3 a minute")
	}
}

func TestAllowAPI(t *testing.T) {
	c, clk := newTest(t, Config{APIRate: 10, APIBurst: 2}, nil)
	for i, want := range []bool{true, true, false} {
		if _, ok := c.AllowAPI("k1"); ok != want {
			t.Errorf("request %d: allowed %v, want %v", i, ok, want)
		}
	}
	if retry, ok := c.AllowAPI("k1"); ok || retry < 90*time.Millisecond || retry > 100*time.Millisecond {
		t.Errorf("over the rate: allowed %v, retry after %v; want refused, retry after ~100ms at 10/s", ok, retry)
	}
	if _, ok := c.AllowAPI("k2"); !ok {
		t.Error("another key is limited too")
	}
	clk.add(100 * time.Millisecond)
	if _, ok := c.AllowAPI("k1"); !ok {
		t.Error("not allowed again after 1/rate")
	}
}

func BenchmarkPublish(b *testing.B) {
	ctx := context.Background()
	b.Run("unlimited", func(b *testing.B) {
		c, _ := New(Config{}, nil, nil)
		b.ReportAllocs()
		for b.Loop() {
			_ = c.Publish(ctx, "bench", "d1", 100, false)
		}
	})
	b.Run("device+tenant", func(b *testing.B) {
		c, _ := New(Config{Device: devices.Limits{Rate: 1e9, BytesRate: 1e9}, Tenant: devices.Limits{Rate: 1e9, BytesRate: 1e9}}, nil, nil)
		b.ReportAllocs()
		for b.Loop() {
			_ = c.Publish(ctx, "bench", "d1", 100, false)
		}
	})
	b.Run("device+tenant/parallel-1000-devices", func(b *testing.B) {
		c, _ := New(Config{Device: devices.Limits{Rate: 1e9}, Tenant: devices.Limits{Rate: 1e9}}, nil, nil)
		ids := make([]string, 1000)
		for i := range ids {
			ids[i] = "d" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				_ = c.Publish(ctx, "bench", ids[i%len(ids)], 100, false)
				i++
			}
		})
	})
}

// FuzzParseRate: whatever the text, ParseRate either refuses it or returns a rate that
// String writes back to the same value.
func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"100/s", "6000/m", "1/h", "0", "off", "0.5", " 7 / s ", "1e9/s", "-1", "/s", "NaN", "Inf/s", "1e-300/h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRate(s)
		if err != nil {
			return
		}
		if r < 0 || r != r || r > 1e9 {
			t.Fatalf("ParseRate(%q) = %v", s, r)
		}
		back, err := ParseRate(r.String())
		if err != nil || (r > 0 && (back-r)/r > 1e-9) || (r == 0 && back != 0) {
			t.Fatalf("ParseRate(%q) = %v, written %q, read back %v, %v", s, r, r.String(), back, err)
		}
	})
}
