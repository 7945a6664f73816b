// Package simtest has helpers for end-to-end tests of replays, scenarios and fleets against a
// real hub (hubtest): recordings with synthetic event times, subscribers that time arrivals,
// and API shortcuts.
package simtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
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

// Ctx is a context that ends with the test (or after a minute).
func Ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// Connect returns a NATS connection and JetStream context on the hub's embedded server.
func Connect(t testing.TB, h *hubtest.Hub) (*nats.Conn, jetstream.JetStream) {
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

// Recording is device traffic stored with synthetic event times.
type Recording struct {
	Base time.Time // event time of the first message
	Envs []*streams.Envelope
}

// Offset is message i's event time after the first.
func (r Recording) Offset(i int) time.Duration { return r.Envs[i].EventTime.Sub(r.Base) }

// ByID maps message IDs to messages.
func (r Recording) ByID() map[string]*streams.Envelope {
	m := map[string]*streams.Envelope{}
	for _, e := range r.Envs {
		m[e.ID] = e
	}
	return m
}

// Record stores n telemetry messages of the given devices whose event times spread over span
// (random gaps), starting slightly in the past, as fast as JetStream takes them.
func Record(t testing.TB, js jetstream.JetStream, devices []string, n int, span time.Duration, seed uint64) Recording {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	gaps := make([]float64, n)
	var sum float64
	for i := 1; i < n; i++ {
		gaps[i] = r.Float64() + 0.05
		sum += gaps[i]
	}
	rec := Recording{Base: time.Now().Add(-span - 5*time.Second).Truncate(time.Millisecond)}
	off := 0.0
	for i := range n {
		off += gaps[i] / sum * float64(span)
		dev := devices[i%len(devices)]
		env := &streams.Envelope{
			DeviceID: dev, Topic: "devices/" + dev + "/telemetry", ContentType: "application/json", Protocol: "mqtt",
			EventTime: rec.Base.Add(time.Duration(off)),
			Payload:   fmt.Appendf(nil, `{"i":%d,"temperature":%.2f}`, i, 20+r.Float64()),
		}
		env.Stamp(time.Now())
		rec.Envs = append(rec.Envs, env)
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
		t.Fatal("Recording not stored")
	}
	return rec
}

// Arrival is a replayed message as a core NATS subscriber saw it.
type Arrival struct {
	At  time.Time
	Env *streams.Envelope
}

// Collector records replayed messages arriving on subject.
type Collector struct {
	mu  sync.Mutex
	got []Arrival
	sub *nats.Subscription
}

// Collect subscribes (core NATS) to subject until the test ends.
func Collect(t testing.TB, nc *nats.Conn, subject string) *Collector {
	t.Helper()
	c := &Collector{}
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		at := time.Now()
		env, err := streams.FromMsg(m.Subject, m.Header, m.Data)
		if err != nil {
			t.Errorf("undecodable replayed message on %s: %v", m.Subject, err)
			return
		}
		c.mu.Lock()
		c.got = append(c.got, Arrival{At: at, Env: env})
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

// Snapshot is what arrived so far.
func (c *Collector) Snapshot() []Arrival {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

// Count is how many arrived so far.
func (c *Collector) Count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

// StartReplay posts a replay and returns the job.
func StartReplay(t testing.TB, h *hubtest.Hub, body map[string]any) replay.Job {
	t.Helper()
	var job replay.Job
	var e struct{ Error string }
	if code := h.Do("POST", "/api/v1/replays", body, &job); code != http.StatusCreated {
		h.Do("POST", "/api/v1/replays", body, &e)
		t.Fatalf("POST /api/v1/replays %v: got %d, want 201 (%s)", body, code, e.Error)
	}
	return job
}

// GetJob reads a replay job over the API.
func GetJob(t testing.TB, h *hubtest.Hub, id string) replay.Job {
	t.Helper()
	var job replay.Job
	if code := h.Do("GET", "/api/v1/replays/"+id, nil, &job); code != http.StatusOK {
		t.Fatalf("GET replay %s: got %d, want 200", id, code)
	}
	return job
}

// WaitJob polls the job until cond holds.
func WaitJob(t testing.TB, h *hubtest.Hub, id string, d time.Duration, what string, cond func(replay.Job) bool) replay.Job {
	t.Helper()
	for deadline := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
		job := GetJob(t, h, id)
		if cond(job) {
			return job
		}
		if time.Now().After(deadline) {
			t.Fatalf("replay %s: %s: not after %s; last state %s, progress %+v, error %q", id, what, d, job.Status, job.Progress, job.Error)
		}
	}
}

// Percentile of sorted durations (nearest rank).
func Percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// StreamCount is how many messages of stream are on subjects matching subject.
func StreamCount(t testing.TB, js jetstream.JetStream, stream, subject string) uint64 {
	t.Helper()
	s, err := js.Stream(Ctx(t), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(Ctx(t), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

// Publish stores envs in order (synchronously) and returns them.
func Publish(t testing.TB, js jetstream.JetStream, envs ...*streams.Envelope) []*streams.Envelope {
	t.Helper()
	for _, env := range envs {
		env.Stamp(time.Now())
		msg, err := env.ToMsg()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(Ctx(t), msg); err != nil {
			t.Fatal(err)
		}
	}
	return envs
}

// Raw sends an authenticated request with a raw body and headers and returns the response with
// its body read.
func Raw(t testing.TB, h *hubtest.Hub, method, path string, body []byte, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, h.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+hubtest.APIKey)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, data
}
