package replay_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/hub/hubtest"
	"github.com/tributary-iot/tributary/simulator/replay"
	"github.com/tributary-iot/tributary/streams"
)

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// connect returns a NATS connection and JetStream context on the hub's embedded server.
func connect(t testing.TB, h *hubtest.Hub) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(h.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(8192))
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// recording is device traffic stored with synthetic event times.
type recording struct {
	base time.Time // event time of the first message
	envs []*streams.Envelope
}

func (r recording) offset(i int) time.Duration { return r.envs[i].EventTime.Sub(r.base) }

func (r recording) byID() map[string]*streams.Envelope {
	m := map[string]*streams.Envelope{}
	for _, e := range r.envs {
		m[e.ID] = e
	}
	return m
}

// record stores n telemetry messages of the given devices whose event times spread over span
// (random gaps), starting slightly in the past, as fast as JetStream takes them.
func record(t testing.TB, js jetstream.JetStream, devices []string, n int, span time.Duration, seed uint64) recording {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	gaps := make([]float64, n)
	var sum float64
	for i := 1; i < n; i++ {
		gaps[i] = r.Float64() + 0.05
		sum += gaps[i]
	}
	rec := recording{base: time.Now().Add(-span - 5*time.Second).Truncate(time.Millisecond)}
	off := 0.0
	for i := range n {
		off += gaps[i] / sum * float64(span)
		dev := devices[i%len(devices)]
		env := &streams.Envelope{
			DeviceID: dev, Topic: "devices/" + dev + "/telemetry", ContentType: "application/json", Protocol: "mqtt",
			EventTime: rec.base.Add(time.Duration(off)),
			Payload:   fmt.Appendf(nil, `{"i":%d,"temperature":%.2f}`, i, 20+r.Float64()),
		}
		env.Stamp(time.Now())
		rec.envs = append(rec.envs, env)
		msg, err := env.ToMsg()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsgAsync(msg); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("recording not stored")
	}
	return rec
}

// arrival is a replayed message as a core NATS subscriber saw it.
type arrival struct {
	at  time.Time
	env *streams.Envelope
}

// collector records replayed messages arriving on subject.
type collector struct {
	mu  sync.Mutex
	got []arrival
	sub *nats.Subscription
}

func collect(t testing.TB, nc *nats.Conn, subject string) *collector {
	t.Helper()
	c := &collector{}
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		at := time.Now()
		env, err := streams.FromMsg(m.Subject, m.Header, m.Data)
		if err != nil {
			t.Errorf("undecodable replayed message on %s: %v", m.Subject, err)
			return
		}
		c.mu.Lock()
		c.got = append(c.got, arrival{at: at, env: env})
		c.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	c.sub = sub
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return c
}

func (c *collector) snapshot() []arrival {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

// startReplay posts a replay and returns the job.
func startReplay(t testing.TB, h *hubtest.Hub, body map[string]any) replay.Job {
	t.Helper()
	var job replay.Job
	var e struct{ Error string }
	if code := h.Do("POST", "/api/v1/replays", body, &job); code != http.StatusCreated {
		h.Do("POST", "/api/v1/replays", body, &e)
		t.Fatalf("POST /api/v1/replays %v: got %d, want 201 (%s)", body, code, e.Error)
	}
	return job
}

func getJob(t testing.TB, h *hubtest.Hub, id string) replay.Job {
	t.Helper()
	var job replay.Job
	if code := h.Do("GET", "/api/v1/replays/"+id, nil, &job); code != http.StatusOK {
		t.Fatalf("GET replay %s: got %d, want 200", id, code)
	}
	return job
}

// waitJob polls the job until cond holds.
func waitJob(t testing.TB, h *hubtest.Hub, id string, d time.Duration, what string, cond func(replay.Job) bool) replay.Job {
	t.Helper()
	var job replay.Job
	hubtest.Eventually(t, d, func() bool {
		job = getJob(t, h, id)
		return cond(job)
	}, "replay %s: %s; last state %s, progress %+v, error %q", id, what, job.Status, job.Progress, job.Error)
	return job
}

// percentile of sorted durations (nearest rank).
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func streamCount(t testing.TB, js jetstream.JetStream, stream, subject string) uint64 {
	t.Helper()
	s, err := js.Stream(testCtx(t), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(testCtx(t), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}
