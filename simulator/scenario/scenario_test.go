package scenario_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/hub/hubtest"
	"github.com/tributary-iot/tributary/simulator/replay"
	"github.com/tributary-iot/tributary/simulator/scenario"
	"github.com/tributary-iot/tributary/simulator/simtest"
	"github.com/tributary-iot/tributary/streams"
)

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestExportImportReplay saves a selection as a scenario, exports it (plain and gzip), imports
// the file under another name, drops the stream's messages as retention would, and replays both
// scenarios: the sandbox gets the original messages, byte for byte, in the original order.
func TestExportImportReplay(t *testing.T) {
	h := hubtest.Start(t)
	for _, d := range []string{"d1", "d2", "d3"} {
		h.CreateDevice(d, nil)
	}
	nc, js := simtest.Connect(t, h)
	base := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	var envs []*streams.Envelope
	for i := range 120 {
		dev := []string{"d1", "d2", "d3"}[i%3]
		env := &streams.Envelope{DeviceID: dev, Topic: "devices/" + dev + "/telemetry", ContentType: "application/json", Protocol: "mqtt",
			EventTime: base.Add(time.Duration(i) * 10 * time.Millisecond), Payload: fmt.Appendf(nil, `{"i":%d}`, i)}
		switch i {
		case 7: // JSON with white space: kept exactly, as base64 in the file
			env.Payload = []byte(`{"i": 7,  "note": "spaced"}`)
		case 8: // binary event, with meta
			env.Topic, env.ContentType, env.Payload = "devices/d3/events/blob", "", []byte{0xff, 0x00, 0x81, '\n'}
			env.Meta = map[string]string{"source": "test"}
		case 9: // out of order in event time
			env.EventTime = base.Add(-time.Second)
		}
		envs = append(envs, env)
	}
	simtest.Publish(t, js, envs...)
	var selected []*streams.Envelope
	for _, e := range envs {
		if e.DeviceID != "d2" {
			selected = append(selected, e)
		}
	}

	var info scenario.Info
	body := map[string]any{"name": "incident", "description": "the night of the 21st", "from": base.Add(-2 * time.Second).Format(time.RFC3339Nano),
		"to": base.Add(10 * time.Second).Format(time.RFC3339Nano), "devices": []string{"d1", "d3"}}
	if code := h.Do("POST", "/api/v1/scenarios", body, &info); code != http.StatusCreated {
		t.Fatalf("create scenario: got %d, want 201", code)
	}
	if info.Messages != uint64(len(selected)) || info.Devices != 2 || info.Origin != "selection" || info.Selection == nil {
		t.Fatalf("scenario %+v: want %d messages of 2 devices from a selection", info, len(selected))
	}

	resp, ndjson := simtest.Raw(t, h, "GET", "/api/v1/scenarios/incident/export", nil, nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("export: got %d %s, want 200 application/x-ndjson", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if lines := strings.Count(string(ndjson), "\n"); lines != len(selected) {
		t.Fatalf("export has %d lines, want %d", lines, len(selected))
	}
	if !strings.Contains(string(ndjson), `"payload":{"i":0}`) || !strings.Contains(string(ndjson), `"payload_base64"`) {
		t.Fatalf("export should embed compact JSON and base64 the rest:\n%.400s", ndjson)
	}
	resp, gz := simtest.Raw(t, h, "GET", "/api/v1/scenarios/incident/export?gzip=1", nil, nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/gzip" || !bytes.Equal(gunzip(t, gz), ndjson) {
		t.Fatalf("export ?gzip=1: got %d %s, want the same NDJSON gzipped", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	resp, enc := simtest.Raw(t, h, "GET", "/api/v1/scenarios/incident/export", nil, map[string]string{"Accept-Encoding": "gzip"})
	if resp.Header.Get("Content-Encoding") != "gzip" || !bytes.Equal(gunzip(t, enc), ndjson) {
		t.Fatalf("export with Accept-Encoding gzip: got Content-Encoding %q, want gzip of the same NDJSON", resp.Header.Get("Content-Encoding"))
	}

	resp, out := simtest.Raw(t, h, "POST", "/api/v1/scenarios/incident-copy/import?description=shared", gz, map[string]string{"Content-Type": "application/gzip"})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("import: got %d %s, want 201", resp.StatusCode, out)
	}
	if resp, out := simtest.Raw(t, h, "POST", "/api/v1/scenarios/incident-copy/import", ndjson, nil); resp.StatusCode != http.StatusConflict {
		t.Fatalf("import over an existing scenario: got %d %s, want 409", resp.StatusCode, out)
	}
	if resp, out := simtest.Raw(t, h, "POST", "/api/v1/scenarios/incident-copy/import?replace=1", ndjson, nil); resp.StatusCode != http.StatusCreated {
		t.Fatalf("import with replace: got %d %s, want 201", resp.StatusCode, out)
	}
	var list struct{ Scenarios []scenario.Info }
	if h.Do("GET", "/api/v1/scenarios", nil, &list); len(list.Scenarios) != 2 || list.Scenarios[1].Name != "incident-copy" || list.Scenarios[1].Description != "" {
		t.Fatalf("list: %+v, want incident and incident-copy", list.Scenarios)
	}

	// Scenarios do not depend on the IOT stream's retention.
	iot, err := js.Stream(simtest.Ctx(t), "IOT")
	if err != nil {
		t.Fatal(err)
	}
	if err := iot.Purge(simtest.Ctx(t), jetstream.WithPurgeSubject("iot.devices.>")); err != nil {
		t.Fatal(err)
	}

	for _, name := range []string{"incident", "incident-copy"} {
		c := simtest.Collect(t, nc, "iot.sandbox.>")
		job := simtest.StartReplay(t, h, map[string]any{"scenario": name, "speed": "max"})
		simtest.WaitJob(t, h, job.ID, 10*time.Second, "done", func(j replay.Job) bool { return j.Status == replay.Done })
		hubtest.Eventually(t, 5*time.Second, func() bool { return c.Count() == len(selected) }, "%s: got %d replayed messages, want %d", name, c.Count(), len(selected))
		for i, a := range c.Snapshot() {
			got, want := a.Env, selected[i]
			if got.Topic != job.SandboxPrefix+want.Topic || !bytes.Equal(got.Payload, want.Payload) || !got.EventTime.Equal(want.EventTime) ||
				!got.ReceivedAt.Equal(want.ReceivedAt) || got.DeviceID != want.DeviceID || got.ContentType != want.ContentType ||
				got.Protocol != want.Protocol || got.Meta["replay_of"] != want.ID || got.Meta["source"] != want.Meta["source"] {
				t.Fatalf("%s: replayed message %d is\n%+v\nwant the original\n%+v", name, i, got, want)
			}
		}
	}

	if code := h.Do("DELETE", "/api/v1/scenarios/incident-copy", nil, nil); code != http.StatusNoContent {
		t.Fatalf("delete: got %d, want 204", code)
	}
	if code := h.Do("GET", "/api/v1/scenarios/incident-copy", nil, nil); code != http.StatusNotFound {
		t.Fatalf("get after delete: got %d, want 404", code)
	}
	if n := simtest.StreamCount(t, js, scenario.Stream, "scenario.incident-copy.>"); n != 0 {
		t.Fatalf("deleted scenario still has %d messages", n)
	}
}

// TestSaveReplaySelection saves what a replay selected as a scenario.
func TestSaveReplaySelection(t *testing.T) {
	h := hubtest.Start(t)
	_, js := simtest.Connect(t, h)
	rec := simtest.Record(t, js, []string{"d1", "d2"}, 40, time.Second, 9)
	job := simtest.StartReplay(t, h, map[string]any{"from": rec.Base.Add(-time.Second).Format(time.RFC3339Nano), "topics": []string{"devices/d2/#"}, "speed": "max"})
	job = simtest.WaitJob(t, h, job.ID, 10*time.Second, "done", func(j replay.Job) bool { return j.Status == replay.Done })
	var info scenario.Info
	if code := h.Do("POST", "/api/v1/scenarios", map[string]any{"name": "from-replay", "replay": job.ID}, &info); code != http.StatusCreated {
		t.Fatalf("create from replay: got %d, want 201", code)
	}
	if info.Messages != job.Progress.Sent || info.Messages != 20 {
		t.Fatalf("scenario has %d messages, replay sent %d, want 20", info.Messages, job.Progress.Sent)
	}
}
