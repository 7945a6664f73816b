package rules

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

type devMap map[string]devices.Device

func (d devMap) Get(id string) (devices.Device, error) {
	if dev, ok := d[id]; ok {
		return dev, nil
	}
	return devices.Device{}, devices.ErrNotFound
}

func TestDecodeEvents(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	recv := at.Add(time.Second)
	devs := devMap{"d1": {ID: "d1", Type: "thermo", Tags: map[string]string{"site": "lab"}}}
	for _, tc := range []struct {
		name string
		env  streams.Envelope
		want string // events as "device type tags time fields"
	}{
		{"telemetry", streams.Envelope{Topic: "devices/d1/telemetry", DeviceID: "d1", EventTime: at, ReceivedAt: recv, Payload: []byte(`{"t":21.5,"env":{"rh":40}}`)},
			`d1 thermo map[site:lab] 03:04:05 map[env.rh:40 t:21.5]`},
		{"senml relative times keep their offsets", streams.Envelope{Topic: "devices/d1/telemetry", DeviceID: "d1", EventTime: at, ReceivedAt: recv,
			ContentType: "application/senml+json", Payload: []byte(`[{"n":"t","v":1,"t":-10},{"n":"t","v":2,"t":-5}]`)},
			`d1 thermo map[site:lab] 03:04:05 map[t:1]|d1 thermo map[site:lab] 03:04:10 map[t:2]`},
		{"unknown device", streams.Envelope{Topic: "devices/d9/telemetry", DeviceID: "d9", EventTime: at, ReceivedAt: recv, Payload: []byte(`{"t":1}`)},
			`d9  map[] 03:04:05 map[t:1]`},
		{"undecodable telemetry", streams.Envelope{Topic: "devices/d1/telemetry", DeviceID: "d1", EventTime: at, Payload: []byte(`nope`)}, ``},
		{"event object", streams.Envelope{Topic: "devices/d1/events/door", DeviceID: "d1", EventTime: at, Payload: []byte(`{"open":true,"where":{"floor":2}}`)},
			`d1 thermo map[site:lab] 03:04:05 map[open:true where:map[floor:2]]`},
		{"event bytes", streams.Envelope{Topic: "devices/d1/events/raw", DeviceID: "d1", EventTime: at, Payload: []byte{0xff, 0x00}},
			`d1 thermo map[site:lab] 03:04:05 map[]`},
		{"rule result", streams.Envelope{Topic: "rules/a/results", DeviceID: "d1", EventTime: at, Payload: []byte(
			`{"rule":"a","group":{"device":"d1","tags.zone":"z1","payload.kind":"k","floor":3},"values":{"avg":2.5,"floor":3}}`)},
			`d1 thermo map[site:lab zone:z1] 03:04:05 map[avg:2.5 floor:3 kind:k rule:a]`},
		{"notification", streams.Envelope{Topic: "rules/a/alerts", EventTime: at, Payload: []byte(
			`{"rule":"a","group":{"tags.site":"roof"},"values":{"n":1},"state":"fired"}`)},
			` ` + ` map[site:roof] 03:04:05 map[n:1 rule:a state:fired]`},
		{"late message of telemetry", streams.Envelope{Topic: "rules/a/late", DeviceID: "d1", EventTime: at, Meta: map[string]string{"source_topic": "devices/d1/telemetry"},
			Payload: []byte(`{"t":3}`)}, `d1 thermo map[site:lab] 03:04:05 map[t:3]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, ev := range decodeEvents(&tc.env, devs) {
				fields, _ := json.Marshal(ev.Fields)
				var m map[string]any
				_ = json.Unmarshal(fields, &m)
				got = append(got, strings.Join([]string{ev.Device, ev.Type, sprint(ev.Tags), ev.Time.Format("15:04:05"), sprint(m)}, " "))
				if !ev.Received.Equal(tc.env.ReceivedAt) {
					t.Errorf("received %v, want %v", ev.Received, tc.env.ReceivedAt)
				}
			}
			if g := strings.Join(got, "|"); g != tc.want {
				t.Errorf("got  %q\nwant %q", g, tc.want)
			}
		})
	}
}

func sprint(v any) string {
	b, _ := json.Marshal(v)
	s := strings.NewReplacer(`{`, `map[`, `}`, `]`, `"`, ``, `,`, ` `).Replace(string(b))
	if s == "null" {
		return "map[]"
	}
	return s
}

func TestCheckpointStoreChunks(t *testing.T) {
	bus := streamstest.New(t)
	ctx := context.Background()
	m, err := New(ctx, bus, nil, Config{}, streamstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	var sv saved
	for _, size := range []int{10, 3*chunkSize + 17, chunkSize, 2 * chunkSize, 5} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rand.IntN(256))
		}
		if err := m.state.save(ctx, "r", data, &sv); err != nil {
			t.Fatalf("save %d bytes: %v", size, err)
		}
		got, _, err := m.state.load(ctx, "r")
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("load after saving %d bytes: %d bytes, %v", size, len(got), err)
		}
		keys, _ := m.state.kv.ListKeys(ctx)
		n := 0
		for range keys.Keys() {
			n++
		}
		if want := 1 + sv.chunks; n != want {
			t.Errorf("after saving %d bytes: %d keys, want %d (old chunks removed)", size, n, want)
		}
	}
	if err := m.state.remove(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	if got, _, err := m.state.load(ctx, "r"); got != nil || err != nil {
		t.Errorf("after remove: %d bytes, %v", len(got), err)
	}

	ck := checkpoint{Incarnation: "i", Fingerprint: "f", LastSeq: 7, Fired: []string{`["a"]`}, Engine: []byte("engine\x00bytes")}
	enc, err := ck.encode()
	if err != nil {
		t.Fatal(err)
	}
	dec, err := decodeCheckpoint(enc)
	if err != nil || dec.LastSeq != 7 || dec.Fired[0] != `["a"]` || string(dec.Engine) != "engine\x00bytes" {
		t.Errorf("checkpoint round trip: %+v, %v", dec, err)
	}
	if _, err := decodeCheckpoint([]byte{0xff}); err == nil {
		t.Error("corrupt checkpoint decoded")
	}
}

func TestDurationJSON(t *testing.T) {
	var s Spec
	if err := json.Unmarshal([]byte(`{"lateness":"1m30s","idle_timeout":"0s"}`), &s); err != nil || *s.Lateness != Duration(90*time.Second) || *s.IdleTimeout != 0 {
		t.Fatalf("got %+v, %v", s, err)
	}
	if b, _ := json.Marshal(s); !strings.Contains(string(b), `"lateness":"1m30s","idle_timeout":"0s"`) {
		t.Errorf("marshal: %s", b)
	}
	for _, bad := range []string{`{"lateness":10}`, `{"lateness":"ten"}`} {
		if err := json.Unmarshal([]byte(bad), &s); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestSourceFilter(t *testing.T) {
	for in, want := range map[string]string{
		"devices/+/telemetry": "devices/+/telemetry",
		"rules/a":             "rules/a/results",
		"rules/+":             "rules/+/results",
		"rules/a/alerts":      "rules/a/alerts",
		"rules/#":             "rules/#",
	} {
		if got := sourceFilter(in); got != want {
			t.Errorf("sourceFilter(%q) = %q, want %q", in, got, want)
		}
	}
}
