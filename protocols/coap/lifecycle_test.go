package coap

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/tributary-iot/tributary/payload"
	"github.com/tributary-iot/tributary/protocols"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

// TestRunStopsCleanly drives every kind of goroutine the server has (peer workers, observers,
// one with a notification in flight, DTLS sessions, the fan-out), cancels Run and checks the
// goroutine count falls back to what it was before the server started. The embedded NATS
// server's own goroutines are not counted: it keeps a stopped consumer until its inactivity
// threshold and the registry's KV stream for good.
func TestRunStopsCleanly(t *testing.T) {
	bus := streamstest.New(t)
	baseline := goroutines()
	h := startHub(t, bus)

	dev := dial(t, h.srv.Addr())
	if r := post(t, dev, "/devices/d1/telemetry", message.AppJSON, `{"t":1}`, "token="+h.tokens["d1"]); r.Code != codes.Changed {
		t.Fatalf("POST: got %s, want 2.04", codeName(r.Code))
	}
	app := dial(t, h.srv.Addr())
	_, ch := observe(t, app, "/devices/d1/telemetry", "key="+testKey)
	next(t, ch)
	rawObserver(t, h.srv.Addr(), "/devices/d1/telemetry", "key="+testKey) // never acknowledges
	sdev := dialDTLS(t, h.srv.DTLSAddr(), "d1", PSKFromToken(h.tokens["d1"]))
	if r := post(t, sdev, "/devices/d1/telemetry", message.AppJSON, `{"t":2}`); r.Code != codes.Changed {
		t.Fatalf("POST over DTLS: got %s, want 2.04", codeName(r.Code))
	}
	sapp := dialDTLS(t, h.srv.DTLSAddr(), "app", []byte(testKey))
	_, sch := observe(t, sapp, "/devices/d1/telemetry")
	next(t, sch)
	publishBus(t, bus, "devices/d1/telemetry", payload.JSON, `{"t":3}`)
	for _, c := range []<-chan reply{ch, sch} {
		for {
			if n := next(t, c); n.Body == `{"t":3}` {
				break
			}
		}
	}
	if got := h.srv.obs.count(); got != 3 {
		t.Fatalf("got %d observers, want 3", got)
	}
	connected := metricValue(protocols.Connected.WithLabelValues("coap"))

	for _, c := range []interface{ Close() error }{dev, app, sdev, sapp} {
		_ = c.Close()
	}
	start := time.Now()
	if err := h.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Run took %v to return after cancel, want under 5s", d)
	}
	if got := metricValue(protocols.Connected.WithLabelValues("coap")); got != connected-3 {
		t.Errorf("connected gauge after stop: got %v, want %v", got, connected-3)
	}

	// Clients' own goroutines take up to 4s to notice they are closed.
	deadline := time.Now().Add(20 * time.Second)
	for goroutines() > baseline {
		if time.Now().After(deadline) {
			var buf bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
			t.Fatalf("got %d goroutines 20s after stop, want at most %d as before start:\n%s", goroutines(), baseline, buf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRunTwiceAndBindErrors(t *testing.T) {
	h := newHub(t)
	if err := h.srv.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("second Run: got %v, want an error", err)
	}
	// The port is taken.
	s, err := New(Config{Addr: h.srv.Addr()}, noIngest{}, testAuth{}, h.bus, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Errorf("Run on a bound port: got %v, want a listen error", err)
	}
}

type noIngest struct{}

func (noIngest) Accept(context.Context, protocols.Message) (*streams.Envelope, error) {
	return nil, errors.New("no")
}
func (noIngest) DeadLetterAuth(context.Context, string, string, string, string) {}

type nilSubscriber struct{}

func (nilSubscriber) Subscribe(ctx context.Context, _ streams.Subscription, _ func(*streams.Envelope)) error {
	<-ctx.Done()
	return nil
}
func (nilSubscriber) Last(context.Context, string) (*streams.Envelope, error) { return nil, nil }

// goroutines counts the goroutines that are not the embedded NATS server's.
func goroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if !strings.Contains(g, "nats-server/v2/server") {
			count++
		}
	}
	return count
}
