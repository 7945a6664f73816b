package fleet_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/hub"
	"github.com/tributary-iot/tributary/hub/hubtest"
	"github.com/tributary-iot/tributary/payload"
	"github.com/tributary-iot/tributary/rules/sql"
	"github.com/tributary-iot/tributary/simulator"
	"github.com/tributary-iot/tributary/simulator/fleet"
	"github.com/tributary-iot/tributary/simulator/simtest"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/streamstest"
	"github.com/tributary-iot/tributary/streams/window"
)

func startSim(t *testing.T, h *hubtest.Hub, def, contentType string) fleet.Simulation {
	t.Helper()
	resp, body := simtest.Raw(t, h, "POST", "/api/v1/simulations", []byte(def), map[string]string{"Content-Type": contentType})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /api/v1/simulations: got %d %s, want 201", resp.StatusCode, body)
	}
	var sim fleet.Simulation
	if err := json.Unmarshal(body, &sim); err != nil {
		t.Fatal(err)
	}
	return sim
}

func waitSim(t *testing.T, h *hubtest.Hub, id string, d time.Duration, what string, cond func(fleet.Simulation) bool) fleet.Simulation {
	t.Helper()
	for deadline := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
		var sim fleet.Simulation
		if code := h.Do("GET", "/api/v1/simulations/"+id, nil, &sim); code != http.StatusOK {
			t.Fatalf("GET simulation %s: %d", id, code)
		}
		if cond(sim) {
			return sim
		}
		if time.Now().After(deadline) {
			t.Fatalf("simulation %s: %s: not after %s; last %s %+v (%s)", id, what, d, sim.Status, sim.Stats, sim.Error)
		}
	}
}

// reading is one telemetry message of a virtual device.
type reading struct {
	device string
	at     time.Time // event time: the device's timestamp
	temp   float64
}

const anomalyFleet = `
name: lab
seed: 11
duration: 3s
profiles:
  - name: th
    devices: 10
    protocol: mqtt
    qos: 1
    rate: 20/s
    fields:
      temperature: {model: sine, mean: 20, amplitude: 2, period: 2s, noise: 0.2}
    anomalies:
      - {kind: spike, field: temperature, at: 1s, duration: 300ms, magnitude: 30, devices: 3}
      - {kind: stuck, field: temperature, at: 1500ms, duration: 600ms, devices: 2}
      - {kind: dropout, at: 2s, duration: 400ms, devices: 2}
  - name: co
    devices: 4
    protocol: coap
    rate: 10/s
    fields:
      temperature: {model: constant, value: 21, noise: 0.1}
    anomalies:
      - {kind: spike, field: temperature, at: 2s, duration: 300ms, magnitude: 40, devices: 1}
`

// TestAnomaliesAtTheirTimesAndCaught runs a fleet over real MQTT and CoAP clients, reads what it
// sent back from the stream (in event-time order, through simulator.Input, the backtest seam)
// and checks each injected anomaly against the recorded ground truth: spikes, stuck values and
// dropouts happen inside their windows only, and two alert rules run on the window engine find
// the spikes and the stuck values with precision and recall 1.
func TestAnomaliesAtTheirTimesAndCaught(t *testing.T) {
	h := hubtest.Start(t)
	_, js := simtest.Connect(t, h)
	sim := startSim(t, h, anomalyFleet, "application/yaml")
	if sim.Devices != 14 || sim.Anomalies != 3+2+2+1 || sim.Seed != 11 {
		t.Fatalf("simulation %+v: want 14 devices, 8 anomaly windows, seed 11", sim)
	}
	sim = waitSim(t, h, sim.ID, 20*time.Second, "done", func(s fleet.Simulation) bool { return !s.Status.Active() })
	if sim.Status != fleet.Done || sim.Stats.Errors != 0 || sim.Stats.Sent == 0 || sim.Stats.Dropped == 0 {
		t.Fatalf("simulation ended %s (%s) with %+v: want done, no errors, some dropped by the dropout", sim.Status, sim.Error, sim.Stats)
	}
	var truth struct{ Truth []fleet.Truth }
	if code := h.Do("GET", "/api/v1/simulations/"+sim.ID+"/truth", nil, &truth); code != http.StatusOK || len(truth.Truth) != 8 {
		t.Fatalf("truth: got %d with %d entries, want 8", code, len(truth.Truth))
	}
	t.Logf("sent %d messages; offered %.0f/s; lag p99 %.0fms", sim.Stats.Sent, sim.Stats.OfferedPerSec, sim.Stats.LagP99Ms)

	// Read back everything the fleet sent, in event-time order.
	res := simulator.NewResolver(js, nil, nil)
	src, err := res.Resolve(simtest.Ctx(t), simulator.Selection{From: sim.StartedAt.Add(-time.Second), Topics: []string{"devices/+/telemetry"}})
	if err != nil {
		t.Fatal(err)
	}
	in, err := simulator.OpenInput(simtest.Ctx(t), js, src, simulator.InputOptions{Order: simulator.OrderEventTime})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	var readings []reading
	var envs []*streams.Envelope
	for env, err := range in.All(simtest.Ctx(t)) {
		if err != nil {
			t.Fatal(err)
		}
		ms, err := payload.DecodeTelemetry(env.ContentType, env.Payload)
		if err != nil {
			t.Fatalf("stored payload %s: %v", env.Payload, err)
		}
		if !env.EventTime.Equal(ms[0].Time) {
			t.Fatalf("event time %s, payload ts %s", env.EventTime, ms[0].Time)
		}
		readings = append(readings, reading{device: env.DeviceID, at: env.EventTime, temp: ms[0].Fields["temperature"].(float64)})
		envs = append(envs, env)
	}
	if uint64(len(readings)) != sim.Stats.Sent {
		t.Fatalf("read %d messages back, the fleet sent %d", len(readings), sim.Stats.Sent)
	}

	// Anomalies happen at their times. Timestamps are whole milliseconds: readings within a
	// millisecond of a window's edge are left out.
	const edge = time.Millisecond
	inside := func(r reading, tr fleet.Truth) bool {
		return !r.at.Before(tr.Start.Add(edge)) && r.at.Before(tr.End.Add(-edge))
	}
	near := func(r reading, tr fleet.Truth) bool {
		return !r.at.Before(tr.Start.Add(-edge)) && r.at.Before(tr.End.Add(edge))
	}
	for _, tr := range truth.Truth {
		var in []reading
		for _, r := range readings {
			if r.device != tr.Device {
				continue
			}
			switch {
			case inside(r, tr):
				in = append(in, r)
			case !near(r, tr) && tr.Kind == fleet.Spike && r.temp > 35:
				t.Errorf("%s: %.2f at %s, outside its spike %s..%s", r.device, r.temp, r.at.Format("15:04:05.000"), tr.Start.Format("15:04:05.000"), tr.End.Format("15:04:05.000"))
			}
		}
		switch tr.Kind {
		case fleet.Spike:
			if len(in) == 0 {
				t.Errorf("spike of %s: no readings in its window", tr.Device)
			}
			for _, r := range in {
				if r.temp < 35 {
					t.Errorf("spike of %s: %.2f at %s, want above 35", tr.Device, r.temp, r.at.Format("15:04:05.000"))
				}
			}
		case fleet.Stuck:
			if len(in) < 5 {
				t.Errorf("stuck %s: %d readings in its window, want at least 5", tr.Device, len(in))
			}
			for _, r := range in {
				if r.temp != in[0].temp {
					t.Errorf("stuck %s: %.3f then %.3f", tr.Device, in[0].temp, r.temp)
				}
			}
		case fleet.Dropout:
			if len(in) != 0 {
				t.Errorf("dropout of %s: %d readings in its window, want none", tr.Device, len(in))
			}
		}
	}

	// Alert rules on the window engine, fed the same envelopes.
	spikes := runRule(t, envs, "SELECT device, max(temperature) AS peak FROM 'devices/+/telemetry' GROUP BY device, TUMBLING(100ms) HAVING peak > 35")
	stuck := runRule(t, envs, "SELECT device, min(temperature) AS lo, max(temperature) AS hi, count(*) AS n FROM 'devices/+/telemetry' GROUP BY device, TUMBLING(200ms) HAVING lo = hi AND n >= 3")
	for _, c := range []struct {
		kind   string
		alerts []window.Result
	}{{fleet.Spike, spikes}, {fleet.Stuck, stuck}} {
		precision, recall := score(truth.Truth, c.kind, c.alerts)
		t.Logf("%s rule: %d alerts, precision %.2f, recall %.2f", c.kind, len(c.alerts), precision, recall)
		if precision != 1 || recall != 1 {
			t.Errorf("%s rule: precision %.2f, recall %.2f; want 1 and 1", c.kind, precision, recall)
		}
	}

	if code := h.Do("DELETE", "/api/v1/simulations/"+sim.ID, nil, nil); code != http.StatusNoContent {
		t.Fatalf("delete: got %d, want 204", code)
	}
	var devs struct{ Devices []struct{ ID string } }
	h.Do("GET", "/api/v1/devices?limit=1000", nil, &devs)
	if len(devs.Devices) != 0 {
		t.Fatalf("after delete, %d devices remain, want the virtual devices removed", len(devs.Devices))
	}
}

// runRule compiles query and runs it over envs (in event-time order) to the end.
func runRule(t *testing.T, envs []*streams.Envelope, query string) []window.Result {
	t.Helper()
	rule, err := sql.Compile("alert", query)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := window.New(rule.Plan, window.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out []window.Result
	for _, env := range envs {
		ms, err := payload.DecodeTelemetry(env.ContentType, env.Payload)
		if err != nil {
			t.Fatal(err)
		}
		res, _ := eng.Process(window.Event{Time: env.EventTime, Received: env.ReceivedAt, Device: env.DeviceID, Fields: ms[0].Fields, Seq: env.Seq})
		out = append(out, res...)
	}
	return append(out, eng.Flush()...)
}

// score compares alerts with the ground truth of one kind: precision is the share of alerts
// whose window overlaps a true anomaly of the same device, recall the share of true anomalies
// that some alert overlaps.
func score(truth []fleet.Truth, kind string, alerts []window.Result) (precision, recall float64) {
	overlaps := func(a window.Result, tr fleet.Truth) bool {
		return a.Group["device"] == tr.Device && a.WindowStart.Before(tr.End) && tr.Start.Before(a.WindowEnd)
	}
	var trues []fleet.Truth
	for _, tr := range truth {
		if tr.Kind == kind {
			trues = append(trues, tr)
		}
	}
	good := 0
	for _, a := range alerts {
		if slices.ContainsFunc(trues, func(tr fleet.Truth) bool { return overlaps(a, tr) }) {
			good++
		}
	}
	found := 0
	for _, tr := range trues {
		if slices.ContainsFunc(alerts, func(a window.Result) bool { return overlaps(a, tr) }) {
			found++
		}
	}
	if len(alerts) == 0 || len(trues) == 0 {
		return 0, 0
	}
	return float64(good) / float64(len(alerts)), float64(found) / float64(len(trues))
}

// TestSimulationLifecycle runs an open-ended fleet with every kind of fault over MQTT QoS 0 and
// CoAP non-confirmable, refuses a second run of the same fleet, stops it and lists it.
func TestSimulationLifecycle(t *testing.T) {
	h := hubtest.Start(t)
	def := `{
  "name": "faulty",
  "seed": 5,
  "profiles": [
    {"name": "m", "devices": 6, "protocol": "mqtt", "qos": 0, "rate": "50/s",
     "fields": {"v": {"model": "random_walk", "start": 10, "step": 0.5}, "mode": {"model": "step", "values": ["eco", "boost"], "every": "300ms"}},
     "clock_skew": "500ms", "out_of_order": 0.05, "late": {"fraction": 0.05, "delay": "200ms"},
     "disconnects": {"every": "400ms", "downtime": "100ms"}, "bursts": {"every": "300ms", "count": 5}},
    {"name": "c", "devices": 3, "protocol": "coap", "confirmable": false, "rate": "20/s",
     "fields": {"on": {"model": "sequence", "values": [true, false]}}}
  ]
}`
	sim := startSim(t, h, def, "application/json")
	sim = waitSim(t, h, sim.ID, 20*time.Second, "faults exercised", func(s fleet.Simulation) bool {
		st := s.Stats
		return s.Status == fleet.Running && st.Sent > 200 && st.Disconnects > 0 && st.Reconnects > 0 && st.Bursts > 0 && st.Late > 0 && st.OutOfOrder > 0
	})
	resp, body := simtest.Raw(t, h, "POST", "/api/v1/simulations", []byte(def), map[string]string{"Content-Type": "application/json"})
	if resp.StatusCode != http.StatusConflict || !strings.Contains(string(body), "faulty") {
		t.Fatalf("second run of the same fleet: got %d %s, want 409", resp.StatusCode, body)
	}
	var stopped fleet.Simulation
	if code := h.Do("POST", "/api/v1/simulations/"+sim.ID+"/stop", nil, &stopped); code != http.StatusOK || stopped.Status != fleet.Stopped {
		t.Fatalf("stop: got %d %s, want 200 stopped", code, stopped.Status)
	}
	final := waitSim(t, h, sim.ID, 10*time.Second, "devices disconnected", func(s fleet.Simulation) bool { return s.Owner == "" })
	if final.Status != fleet.Stopped || final.Stats.Connected != 0 || final.EndedAt.IsZero() {
		t.Fatalf("stopped simulation %+v", final)
	}
	if code := h.Do("POST", "/api/v1/simulations/"+sim.ID+"/stop", nil, nil); code != http.StatusConflict {
		t.Fatalf("stop a stopped simulation: got %d, want 409", code)
	}
	var truth struct{ Truth []fleet.Truth }
	h.Do("GET", "/api/v1/simulations/"+sim.ID+"/truth", nil, &truth)
	kinds := map[string]int{}
	for _, tr := range truth.Truth {
		kinds[tr.Kind]++
	}
	if kinds["disconnect"] == 0 || kinds["burst"] == 0 {
		t.Fatalf("truth kinds %v: want disconnects and bursts", kinds)
	}
	var list struct{ Simulations []fleet.Simulation }
	if code := h.Do("GET", "/api/v1/simulations", nil, &list); code != http.StatusOK || len(list.Simulations) != 1 {
		t.Fatalf("list: %d %d", code, len(list.Simulations))
	}
	var devs struct{ Devices []struct{ ID string } }
	h.Do("GET", "/api/v1/devices?limit=1000", nil, &devs)
	if len(devs.Devices) != 9 {
		t.Fatalf("registry holds %d devices, want the 9 virtual ones", len(devs.Devices))
	}
	t.Logf("stats %+v; truth %v", final.Stats, kinds)
	// Running the fleet again takes over its devices.
	again := startSim(t, h, strings.Replace(def, `"seed": 5`, `"seed": 6`, 1), "application/json")
	waitSim(t, h, again.ID, 20*time.Second, "running again", func(s fleet.Simulation) bool { return s.Status == fleet.Running && s.Stats.Sent > 0 })
	if code := h.Do("DELETE", "/api/v1/simulations/"+again.ID+"?keep_devices=1", nil, nil); code != http.StatusNoContent {
		t.Fatalf("delete: %d", code)
	}
	h.Do("GET", "/api/v1/devices?limit=1000", nil, &devs)
	if len(devs.Devices) != 9 {
		t.Fatalf("keep_devices: registry holds %d devices, want 9", len(devs.Devices))
	}
	_ = fmt.Sprint()
}

// TestSimulationResumesAfterRestart: a hub that stops (SIGTERM) while a simulation runs hands
// it over rather than ending it; the hub started in its place on the same NATS resumes it.
func TestSimulationResumesAfterRestart(t *testing.T) {
	t.Parallel()
	ns := streamstest.Server(t)
	ext := func(c *hub.Config) { c.NATSURL, c.NATSAddr = ns.ClientURL(), "" }
	first := hubtest.Start(t, ext)
	sim := startSim(t, first, `{"name":"restarts","duration":"2m","profiles":[{"name":"p","devices":2,"protocol":"coap","rate":"5/s",
		"fields":{"t":{"model":"constant","value":1}}}]}`, "application/json")
	before := waitSim(t, first, sim.ID, 15*time.Second, "running", func(s fleet.Simulation) bool {
		return s.Status == fleet.Running && s.Stats.Sent >= 5
	})
	first.Stop()
	second := hubtest.Start(t, ext)
	after := waitSim(t, second, sim.ID, 20*time.Second, "resumed by the new hub", func(s fleet.Simulation) bool {
		return s.Resumes == 1 && s.Owner == second.Instance() && s.Stats.Sent > before.Stats.Sent
	})
	if after.Status != fleet.Running || !after.StartedAt.Equal(before.StartedAt) {
		t.Errorf("resumed simulation %s started at %v, want running on the first start %v", after.Status, after.StartedAt, before.StartedAt)
	}
}
