package hub_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tributary-iot/tributary/hub"
	"github.com/tributary-iot/tributary/hub/hubtest"
)

// TestTenantRetentionPurgesOldMessages: a tenant with a 4s retention quota loses its devices'
// messages older than 4s from the stream (GET /devices/{id}/messages) while its fresh ones stay,
// and a default-tenant device's messages of the same age stay too.
func TestTenantRetentionPurgesOldMessages(t *testing.T) {
	t.Parallel()
	h := hubtest.Start(t, func(c *hub.Config) { c.RetentionInterval = 300 * time.Millisecond })
	if code, body := call(t, h, hubtest.APIKey, "POST", "/api/v1/tenants", map[string]any{"name": "short", "quotas": map[string]any{"retention": "4s"}}); code != 201 {
		t.Fatalf("create tenant short: %d %s", code, body)
	}
	shortTok := h.CreateDevice("short1", map[string]any{"tenant": "short"})
	defTok := h.CreateDevice("long1", nil)
	short := mqttConnect(t, h.MQTTAddr(), "short1", "short1", shortTok)
	def := mqttConnect(t, h.MQTTAddr(), "long1", "long1", defTok)
	publish := func(c paho.Client, payload string) {
		t.Helper()
		if tok := c.Publish("devices/"+map[paho.Client]string{short: "short1", def: "long1"}[c]+"/telemetry", 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", payload, tok.Error())
		}
	}
	for i := range 3 {
		publish(short, fmt.Sprintf(`{"old":%d}`, i))
		publish(def, fmt.Sprintf(`{"old":%d}`, i))
	}
	oldAt := time.Now()
	if got := payloads(t, h, "short1"); len(got) != 3 {
		t.Fatalf("short1 messages before any purge: %v, want 3", got)
	}
	// Fresh messages 2.5s later: they are 1.5s old when the old ones pass 4s, and stay until 4s
	// after they were sent.
	time.Sleep(time.Until(oldAt.Add(2500 * time.Millisecond)))
	publish(short, `{"fresh":1}`)
	freshAt := time.Now()

	var got []string
	hubtest.Eventually(t, 4*time.Second, func() bool {
		got = payloads(t, h, "short1")
		return !slices.ContainsFunc(got, func(p string) bool { return strings.Contains(p, "old") })
	}, "short1's messages older than its tenant's 4s retention are still listed")
	if time.Since(freshAt) < 4*time.Second && !slices.Equal(got, []string{`{"fresh":1}`}) {
		t.Fatalf("short1 after the purge: %v, want its fresh message only", got)
	}
	if d := time.Since(oldAt); d < 4*time.Second {
		t.Fatalf("old messages gone after %s, before the 4s retention passed", d)
	}
	if got := payloads(t, h, "long1"); len(got) != 3 {
		t.Fatalf("default tenant's device lost messages: %v, want its 3", got)
	}
	// The 3 old telemetry messages and the hub's status event of short1's connection.
	m := metricsText(t, h)
	var n int
	if _, err := fmt.Sscanf(grepLines(m, `tributary_retention_purged_total{tenant="short"}`), `tributary_retention_purged_total{tenant="short"} %d`, &n); err != nil || n < 3 {
		t.Errorf("/metrics: want at least 3 messages purged for tenant short:\n%s", grepLines(m, "retention"))
	}
}

// payloads lists a device's message payloads, oldest first.
func payloads(t *testing.T, h *hubtest.Hub, id string) []string {
	t.Helper()
	var page struct {
		Messages []struct {
			Payload json.RawMessage `json:"payload"`
		}
	}
	if code := h.Do("GET", "/api/v1/devices/"+id+"/messages", nil, &page); code != http.StatusOK {
		t.Fatalf("messages of %s: %d", id, code)
	}
	out := make([]string, 0, len(page.Messages))
	for _, m := range page.Messages {
		out = append(out, string(m.Payload))
	}
	slices.Sort(out)
	return out
}

func grepLines(s, sub string) string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
