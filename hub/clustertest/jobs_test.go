package clustertest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/nats-io/nats.go"
	"net/http"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/hub/hubproc"
	"github.com/tributary-iot/tributary/hub/hubtest"
	simfleet "github.com/tributary-iot/tributary/simulator/fleet"
	"github.com/tributary-iot/tributary/simulator/replay"
	"github.com/tributary-iot/tributary/streams/natscluster"
)

// api sends an API request to a hub process and decodes the answer into out (if not nil).
func api(t *testing.T, httpAddr, method, path string, body, out any) int {
	t.Helper()
	var r *bytes.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		r = bytes.NewReader(data)
	} else {
		r = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, "http://"+httpAddr+path, r)
	req.Header.Set("Authorization", "Bearer "+hubtest.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if out != nil {
		json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

// getAPI reads one object from a hub process's API (the zero value when it cannot).
func getAPI[T any](t *testing.T, httpAddr, path string) T {
	t.Helper()
	var v T
	api(t, httpAddr, "GET", path, nil, &v)
	return v
}

// TestReplayOwnerKilled: a paced replay runs on the hub that started it; that hub gets SIGKILL
// mid-replay. The other hub sees the owner leave the live members (the lease store's keys,
// which the NATS server expires: no clock comparison), takes the job up from its last
// checkpoint and finishes it. Every recorded message is replayed exactly once: those sent again
// after the checkpoint carry the same message ID and the stream drops them.
func TestReplayOwnerKilled(t *testing.T) {
	t.Parallel()
	const n = 60
	const ttl = 2 * time.Second
	nc3 := natscluster.ForTest(t, 3)
	sh := hubproc.Shared{NATSURL: nc3.URL(), LeaseTTL: ttl}
	a, b := startPair(t, sh)

	// The recording: n readings of one device, 100 ms apart in event time (6 s at speed 1).
	tokens := createDevices(t, a.HTTP, "rp", 1)
	dev := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + a.MQTT).SetClientID("rp-00").
		SetUsername("rp-00").SetPassword(tokens["rp-00"]).SetAutoReconnect(false))
	if tok := dev.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("device connect: %v", tok.Error())
	}
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	for i := range n {
		p := fmt.Sprintf(`{"seq":%d,"ts":%d}`, i, base.Add(time.Duration(i)*100*time.Millisecond).UnixMilli())
		if tok := dev.Publish("devices/rp-00/telemetry", 1, false, p); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	dev.Disconnect(50)

	var job replay.Job
	// Telemetry only: the device's status events carry the real time, an hour after the
	// readings' event time, and would hold the paced replay for that hour.
	req := map[string]any{"from": base.Add(-time.Second).Format(time.RFC3339Nano), "topics": []string{"devices/rp-00/telemetry"}, "speed": 1}
	if code := api(t, a.HTTP, "POST", "/api/v1/replays", req, &job); code != http.StatusCreated {
		t.Fatalf("start replay through hub A: %d %+v", code, job)
	}
	get := func(addr string) replay.Job { return getAPI[replay.Job](t, addr, "/api/v1/replays/"+job.ID) }
	hubtest.Eventually(t, 10*time.Second, func() bool { return get(a.HTTP).Progress.Sent >= 15 }, "replay did not start on hub A: %+v", get(a.HTTP))
	owner := get(a.HTTP).Owner
	a.Kill()
	killed := time.Now()
	var taker replay.Job
	hubtest.Eventually(t, 30*time.Second, func() bool {
		taker = get(b.HTTP)
		return taker.Resumes > 0 || taker.Owner != "" && taker.Owner != owner
	}, "hub B did not take the replay over from %s", owner)
	took := time.Since(killed)
	hubtest.Eventually(t, 30*time.Second, func() bool { return get(b.HTTP).Status == replay.Done }, "replay not done on hub B: %+v", get(b.HTTP))
	j := get(b.HTTP)
	t.Logf("hub A (%s) killed after 15 or more of %d readings; hub B (%s) took over after %v (lease TTL %v) at position %d; %d sent in all, %d resume",
		owner, n, taker.Owner, took.Round(time.Millisecond), ttl, taker.Progress.Position, j.Progress.Sent, j.Resumes)
	if took > ttl+5*time.Second {
		t.Errorf("takeover took %v, want at most the lease TTL %v plus the claim interval", took, ttl)
	}

	// The sandbox holds each recorded reading exactly once.
	seqs := map[int]int{}
	readStream(t, nc3.URL(), replay.SandboxSubject(job.ID), func(m jetstream.Msg) {
		var p struct{ Seq int }
		if err := json.Unmarshal(m.Data(), &p); err != nil {
			t.Fatalf("replayed payload %q: %v", m.Data(), err)
		}
		seqs[p.Seq]++
	})
	for i := range n {
		if seqs[i] != 1 {
			t.Errorf("reading %d replayed %d times, want once", i, seqs[i])
		}
	}
	if len(seqs) != n {
		t.Errorf("%d distinct readings replayed, want %d", len(seqs), n)
	}
}

// TestSimulationOwnerKilled: a virtual fleet runs in the hub that started it; that hub gets
// SIGKILL. The other hub sees the owner leave the live members and resumes the simulation on
// the same timeline: its devices go on where the plan has them (message k of a device still
// carries value k at its time k; nothing sent before the kill is sent again), and the counters
// carry on from the last heartbeat.
func TestSimulationOwnerKilled(t *testing.T) {
	t.Parallel()
	const ttl = 2 * time.Second
	nc3 := natscluster.ForTest(t, 3)
	a, b := startPair(t, hubproc.Shared{NATSURL: nc3.URL(), LeaseTTL: ttl})

	// Every reading, by device: value n is the n-th message, due at the device's phase + n×200 ms.
	type reading struct{ ts, n int64 }
	var mu sync.Mutex
	got := map[string][]reading{}
	nc, err := nats.Connect(nc3.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Subscribe("iot.devices.*.telemetry", func(m *nats.Msg) {
		var p struct{ Ts, N int64 }
		if json.Unmarshal(m.Data, &p) != nil {
			return
		}
		mu.Lock()
		got[m.Subject] = append(got[m.Subject], reading{p.Ts, p.N})
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	seq := make([]int, 300)
	for i := range seq {
		seq[i] = i
	}
	def := map[string]any{"name": "moving", "duration": "60s", "profiles": []map[string]any{{"name": "p", "devices": 2, "protocol": "mqtt", "rate": "5/s",
		"fields": map[string]any{"n": map[string]any{"model": "sequence", "values": seq}}}}}
	var sim simfleet.Simulation
	if code := api(t, a.HTTP, "POST", "/api/v1/simulations", def, &sim); code != http.StatusCreated {
		t.Fatalf("start simulation through hub A: %d %+v", code, sim)
	}
	get := func(addr string) simfleet.Simulation {
		return getAPI[simfleet.Simulation](t, addr, "/api/v1/simulations/"+sim.ID)
	}
	hubtest.Eventually(t, 15*time.Second, func() bool { s := get(b.HTTP); return s.Status == simfleet.Running && s.Stats.Sent >= 10 },
		"simulation not running: %+v", get(b.HTTP))
	before := get(b.HTTP)
	a.Kill()
	killed := time.Now()
	var s simfleet.Simulation
	hubtest.Eventually(t, 30*time.Second, func() bool {
		s = get(b.HTTP)
		return s.Resumes > 0 && s.Owner != "" && s.Owner != before.Owner
	}, "simulation not taken over by hub B after its owner died: %+v", s)
	took := time.Since(killed)
	resumedAt := time.Now().UnixMilli()
	hubtest.Eventually(t, 15*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		after := 0
		for _, rs := range got {
			if len(rs) > 0 && rs[len(rs)-1].ts > resumedAt+time.Second.Milliseconds() {
				after++
			}
		}
		return after == 2
	}, "the resumed devices do not send through hub B")
	s = get(b.HTTP)
	t.Logf("simulation resumed by hub B %v after its owner's SIGKILL (lease TTL %v); %d sent before the kill, %d now; status %s",
		took.Round(time.Millisecond), ttl, before.Stats.Sent, s.Stats.Sent, s.Status)
	if took > ttl+5*time.Second {
		t.Errorf("takeover took %v, want at most the lease TTL %v plus the sweep interval", took, ttl)
	}
	if s.Status != simfleet.Running || s.Stats.Sent <= before.Stats.Sent || !s.StartedAt.Equal(before.StartedAt) {
		t.Errorf("resumed simulation %+v: want it running, its counters carried on, its start unchanged (%v)", s, before.StartedAt)
	}
	mu.Lock()
	defer mu.Unlock()
	for dev, rs := range got {
		seen := map[int64]bool{}
		for _, r := range rs {
			if seen[r.n] {
				t.Errorf("%s: reading %d sent twice", dev, r.n)
			}
			seen[r.n] = true
			// The device's phase and clock skew are fixed: ts − n×200 ms is one value.
			if r.ts-r.n*200 != rs[0].ts-rs[0].n*200 {
				t.Errorf("%s: reading %d at %d is off the timeline of reading %d at %d", dev, r.n, r.ts, rs[0].n, rs[0].ts)
			}
		}
	}
}
