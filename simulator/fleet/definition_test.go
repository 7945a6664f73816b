package fleet_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/simulator"
	"github.com/tributary-iot/tributary/simulator/fleet"
)

const example = `# A cold chain: fridges over MQTT, door sensors over CoAP.
name: cold-chain
seed: 42
duration: 10m
profiles:
  - name: fridge
    devices: 50
    protocol: mqtt
    qos: 1
    rate: 1/s
    fields:
      temperature: {model: sine, mean: 4, amplitude: 1.5, period: 10m, noise: 0.1}
      door: {model: sequence, values: [false, false, false, true]}
      battery: {model: random_walk, start: 100, step: 0.05, min: 0, max: 100}
      setpoint: {model: step, values: [4, 6], every: 5m}
      fw: {model: constant, value: "1.2.0"}
    clock_skew: 2s
    out_of_order: 0.01
    late: {fraction: 0.01, delay: 30s}
    disconnects: {every: 5m, downtime: 10s}
    bursts: {every: 2m, count: 20}
    anomalies:
      - {kind: spike, field: temperature, at: 2m, duration: 5s, magnitude: 15, devices: 3}
      - {kind: drift, field: temperature, at: 4m, duration: 2m, magnitude: 5, devices: 10%}
      - {kind: stuck, field: temperature, at: 6m, duration: 1m, devices: 2}
      - {kind: dropout, at: 8m, duration: 30s}
  - name: door
    devices: 20
    id_prefix: door
    protocol: coap
    confirmable: false
    rate: 6/m
    fields:
      open: {model: sequence, values: [0, 0, 1]}
`

func TestParseExample(t *testing.T) {
	def, err := fleet.Parse([]byte(example), "yaml")
	if err != nil {
		t.Fatal(err)
	}
	if def.Name != "cold-chain" || *def.Seed != 42 || def.Duration.D() != 10*time.Minute || len(def.Profiles) != 2 {
		t.Fatalf("got %+v", def)
	}
	p := def.Profiles[1]
	if p.Rate != 0.1 || *p.Confirmable || p.Protocol != "coap" {
		t.Fatalf("door profile: got %+v", p)
	}
	if a := def.Profiles[0].Anomalies[1]; a.Devices.Percent != 10 {
		t.Fatalf("anomaly devices: got %+v, want 10%%", a.Devices)
	}
	plan := fleet.NewPlan(def, *def.Seed)
	if len(plan.Devices) != 70 || plan.Devices[0].ID != "cold-chain-fridge-0001" || plan.Devices[69].ID != "door-0020" {
		t.Fatalf("devices: %d, first %s, last %s", len(plan.Devices), plan.Devices[0].ID, plan.Devices[len(plan.Devices)-1].ID)
	}
	windows := 0
	for _, d := range plan.Devices {
		windows += len(d.Anomalies)
	}
	if windows != 3+5+2+1 {
		t.Fatalf("anomaly windows: got %d, want 11", windows)
	}
}

func TestParseJSON(t *testing.T) {
	def, err := fleet.Parse([]byte(`{
	"name": "j",
	"profiles": [{"name": "p", "devices": 2, "protocol": "mqtt", "rate": "2/s",
		"fields": {"t": {"model": "constant", "value": 1}}}]
}`), "json")
	if err != nil {
		t.Fatal(err)
	}
	if def.Profiles[0].Rate != 2 || def.Seed != nil {
		t.Fatalf("got %+v", def)
	}
}

// TestParseErrors: malformed fleet files are refused with the line and the field.
func TestParseErrors(t *testing.T) {
	profile := func(extra string) string {
		return "name: f\nprofiles:\n  - name: p\n    devices: 2\n    protocol: mqtt\n    rate: 1/s\n    fields:\n      t: {model: sine, mean: 1, amplitude: 1, period: 1m}\n" + extra
	}
	for _, tc := range []struct{ name, in, want string }{
		{"empty", "", "empty"},
		{"not a mapping", "- a\n- b\n", "line 1: the fleet definition must be a mapping"},
		{"syntax", "name: f\nprofiles: [\n", "line 2"},
		{"tab indent", "name: f\nprofiles:\n\t- name: p\n", "line 3"},
		{"unknown top field", "name: f\nprofile: []\n", "line 2: profile: unknown field profile"},
		{"unknown profile field", profile("    rat: 2/s\n"), "line 9: profiles[0].rat: unknown field rat"},
		{"no name", "profiles: []\n", "name: required"},
		{"bad name", "name: 'a b'\nprofiles: []\n", `line 1: name: "a b"`},
		{"no profiles", "name: f\n", "profiles: at least one profile"},
		{"devices type", strings.Replace(profile(""), "devices: 2", "devices: many", 1), "line 4: profiles[0].devices: cannot unmarshal !!str `many`"},
		{"devices zero", strings.Replace(profile(""), "devices: 2", "devices: 0", 1), "line 4: profiles[0].devices: must be at least 1"},
		{"protocol", strings.Replace(profile(""), "protocol: mqtt", "protocol: http", 1), `line 5: profiles[0].protocol: got "http", want mqtt or coap`},
		{"qos", profile("    qos: 2\n"), "line 9: profiles[0].qos: got 2, want 0 or 1"},
		{"confirmable on mqtt", profile("    confirmable: true\n"), "line 9: profiles[0].confirmable: applies to coap only"},
		{"rate text", strings.Replace(profile(""), "rate: 1/s", "rate: fast", 1), `line 6: profiles[0].rate: "fast" is not a rate`},
		{"rate zero", strings.Replace(profile(""), "rate: 1/s", "rate: 0/s", 1), "line 6: profiles[0].rate: 0 messages/s per device out of range"},
		{"rate missing", strings.Replace(profile(""), "    rate: 1/s\n", "", 1), "profiles[0].rate: required"},
		{"no fields", strings.Split(profile(""), "    fields:")[0], "profiles[0].fields: at least one field"},
		{"unknown model", strings.Replace(profile(""), "model: sine", "model: square", 1), `line 8: profiles[0].fields.t.model: got "square"`},
		{"param of other model", strings.Replace(profile(""), "period: 1m", "period: 1m, values: [1]", 1), "line 8: profiles[0].fields.t.values: not a parameter of model sine"},
		{"sine without period", strings.Replace(profile(""), ", period: 1m", "", 1), "line 8: profiles[0].fields.t.period: required for model sine"},
		{"bad duration", strings.Replace(profile(""), "period: 1m", "period: soon", 1), `line 8: profiles[0].fields.t: "soon" is not a duration`},
		{"fraction", profile("    out_of_order: 1.5\n"), "line 9: profiles[0].out_of_order: 1.5 is not a fraction"},
		{"late without delay", profile("    late: {fraction: 0.1}\n"), "line 9: profiles[0].late.delay"},
		{"anomaly kind", profile("    anomalies:\n      - {kind: explode, field: t, at: 1s}\n"), `line 10: profiles[0].anomalies[0].kind: got "explode"`},
		{"anomaly field", profile("    anomalies:\n      - {kind: spike, field: x, at: 1s, magnitude: 3}\n"), `line 10: profiles[0].anomalies[0].field: "x" is not a field of profile p`},
		{"anomaly magnitude", profile("    anomalies:\n      - {kind: spike, field: t, at: 1s}\n"), "line 10: profiles[0].anomalies[0].magnitude: required for spike"},
		{"anomaly devices", profile("    anomalies:\n      - {kind: stuck, field: t, at: 1s, devices: 5}\n"), "line 10: profiles[0].anomalies[0].devices: 5, but profile p has 2 devices"},
		{"anomaly after the end", "duration: 10s\n" + profile("    anomalies:\n      - {kind: dropout, at: 20s}\n"), "line 11: profiles[0].anomalies[0].at: 20s is not before the end of the run"},
		{"duplicate profile", profile("  - name: p\n    devices: 1\n    protocol: coap\n    rate: 1\n    fields: {a: {model: constant, value: 1}}\n"), `line 9: profiles[1].name: "p" is used by another profile`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := fleet.Parse([]byte(tc.in), "yaml")
			if err == nil {
				t.Fatalf("no error, want one containing %q", tc.want)
			}
			if !errors.Is(err, simulator.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %q, want it to contain %q", err, tc.want)
			}
		})
	}
}
