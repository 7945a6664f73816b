package scenario_test

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/simulator"
	"github.com/tributary-iot/tributary/simulator/scenario"
	"github.com/tributary-iot/tributary/streams"
)

// TestDecodeErrors: every malformed line is refused with its line number and what is wrong.
func TestDecodeErrors(t *testing.T) {
	good := `{"topic":"devices/d1/telemetry","event_time":"2026-11-22T10:00:00Z","payload":{"t":1}}`
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(good + "\n" + good + "\n"))
	zw.Close()
	for _, tc := range []struct{ name, in, want string }{
		{"empty", "", "the file holds no messages"},
		{"blank lines only", "\n\n  \n", "the file holds no messages"},
		{"not json", good + "\nhello\n", "line 2: not a JSON object"},
		{"broken json", good + "\n" + good + "\n{\"topic\": \n", "line 3: invalid JSON: the line ends too early"},
		{"unknown field", `{"topic":"a","event_time":"2026-11-22T10:00:00Z","colour":1}`, `line 1: unknown field "colour"`},
		{"no topic", `{"event_time":"2026-11-22T10:00:00Z"}`, "line 1: topic: required"},
		{"no event time", `{"topic":"devices/d1/telemetry"}`, "line 1: event_time: required"},
		{"bad time", `{"topic":"a","event_time":"yesterday"}`, "line 1: a time is not RFC 3339"},
		{"wildcard topic", `{"topic":"devices/+/telemetry","event_time":"2026-11-22T10:00:00Z"}`, "line 1: topic:"},
		{"sandbox topic", `{"topic":"sandbox/r1/devices/d1/telemetry","event_time":"2026-11-22T10:00:00Z"}`, "line 1: topic: \"sandbox/r1/devices/d1/telemetry\" is replay output"},
		{"device mismatch", `{"topic":"devices/d1/telemetry","device":"d2","event_time":"2026-11-22T10:00:00Z"}`, `line 1: device: "d2" does not match`},
		{"both payloads", `{"topic":"a","event_time":"2026-11-22T10:00:00Z","payload":1,"payload_base64":"AA=="}`, "line 1: payload and payload_base64"},
		{"bad base64", `{"topic":"a","event_time":"2026-11-22T10:00:00Z","payload_base64":"%%%"}`, "line 1:"},
		{"wrong type", `{"topic":5,"event_time":"2026-11-22T10:00:00Z"}`, "line 1: topic: got JSON number, want string"},
		{"two objects", good + good, "line 1: data after the JSON object"},
		{"truncated gzip", string(gz.Bytes()[:gz.Len()-6]), "gzip"},
		{"long line", `{"topic":"a","event_time":"2026-11-22T10:00:00Z","payload":"` + strings.Repeat("x", scenario.MaxLine) + `"}`, "line 1: longer than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := scenario.Decode(strings.NewReader(tc.in), func(int, *streams.Envelope) error { return nil })
			if err == nil || !errors.Is(err, simulator.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an invalid error containing %q", err, tc.want)
			}
		})
	}
}

// FuzzDecode: the importer never panics, and what it accepts encodes and decodes to the same
// envelopes.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"topic":"devices/d1/telemetry","event_time":"2026-11-22T10:00:00Z","payload":{"t":1}}`))
	f.Add([]byte(`{"id":"x","device":"d1","topic":"devices/d1/events/e","event_time":"2026-11-22T10:00:00.123456789+02:00","received_at":"2026-11-22T10:00:01Z","content_type":"application/cbor","protocol":"coap","payload_base64":"oWF0AQ==","meta":{"k":"v"}}` + "\n\n"))
	f.Add([]byte("{\"topic\":\"a/b\",\"event_time\":\"2026-11-22T10:00:00Z\",\"payload\":[1, 2]}\n{\"seq\":3,\"topic\":\"a\",\"event_time\":\"2026-11-22T10:00:00Z\"}"))
	f.Add([]byte{0x1f, 0x8b, 0x08, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		var envs []*streams.Envelope
		_, err := scenario.Decode(bytes.NewReader(data), func(_ int, e *streams.Envelope) error {
			envs = append(envs, e)
			return nil
		})
		if err != nil {
			return
		}
		var buf bytes.Buffer
		enc := scenario.NewEncoder(&buf)
		for _, e := range envs {
			if err := enc.Encode(e); err != nil {
				t.Fatal(err)
			}
		}
		var again []*streams.Envelope
		if _, err := scenario.Decode(&buf, func(_ int, e *streams.Envelope) error {
			again = append(again, e)
			return nil
		}); err != nil {
			t.Fatalf("re-decoding what was accepted: %v\n%s", err, buf.Bytes())
		}
		if len(again) != len(envs) {
			t.Fatalf("%d envelopes, then %d", len(envs), len(again))
		}
		for i := range envs {
			a, b := envs[i], again[i]
			if a.Topic != b.Topic || !bytes.Equal(a.Payload, b.Payload) || !a.EventTime.Equal(b.EventTime) || a.ID != b.ID ||
				a.DeviceID != b.DeviceID || !a.ReceivedAt.Equal(b.ReceivedAt) || a.ContentType != b.ContentType {
				t.Fatalf("envelope %d changed: %+v -> %+v", i, a, b)
			}
		}
	})
}

// ExampleDecode reads a scenario file.
func ExampleDecode() {
	file := `{"topic":"devices/d1/telemetry","event_time":"2026-11-22T10:00:00Z","payload":{"t":21.5}}
{"topic":"devices/d1/telemetry","event_time":"2026-11-22T10:00:01Z","payload":{"t":21.7}}
`
	n, err := scenario.Decode(strings.NewReader(file), func(line int, env *streams.Envelope) error {
		fmt.Println(line, env.DeviceID, env.EventTime.Format(time.TimeOnly), string(env.Payload))
		return nil
	})
	fmt.Println(n, err)
	// Output:
	// 1 d1 10:00:00 {"t":21.5}
	// 2 d1 10:00:01 {"t":21.7}
	// 2 <nil>
}
