package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tributary-iot/tributary/hub/hubtest"
)

// TestCanaryAgainstHub creates a canary from YAML, feeds it two intervals of telemetry from
// ten MQTT devices (five on firmware 2.1 with 30% higher latency) and pins list, get, results
// and delete in a golden transcript.
func TestCanaryAgainstHub(t *testing.T) {
	isolate(t)
	h := hubtest.Start(t)
	t.Setenv("HUB_URL", h.URL)
	t.Setenv("HUB_API_KEY", hubtest.APIKey)

	file := filepath.Join(t.TempDir(), "canary.yaml")
	os.WriteFile(file, []byte(`name: fw21
interval: 10s
lateness: 0s
idle_timeout: 0s
canary_group: {tags: ["fw:2.1"]}
control_group: {tags: ["fw:2.0"]}
metrics:
  - {field: latency, better: lower, tolerance: 0.05}
  - {field: throughput, better: higher, method: mann-whitney}
`), 0o600)
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("name: bad\ncanary_group: {tags: [\"fw:2.1\"]}\ncontrol_group: {tags: [\"fw:2.1\"]}\nmetrics: [{field: latency}]\n"), 0o600)

	script(t, "canary-create",
		[]string{"canary", "list"},
		[]string{"canary", "create", "-f", bad},
		[]string{"canary", "create", "-f", file, "-o", "json"},
	)

	var clients []paho.Client
	var ids []string
	for i := range 10 {
		id, fw := fmt.Sprintf("k%d", i), "2.0"
		if i >= 5 {
			id, fw = fmt.Sprintf("c%d", i-5), "2.1"
		}
		token := h.CreateDevice(id, map[string]any{"type": "gateway", "tags": map[string]string{"fw": fw}})
		c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + h.MQTTAddr()).SetClientID(id).SetUsername(id).SetPassword(token))
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("MQTT connect: %v", tok.Error())
		}
		defer c.Disconnect(100)
		clients, ids = append(clients, c), append(ids, id)
	}
	hubtest.Eventually(t, 10*time.Second, func() bool {
		var st struct{ Running, CatchingUp bool }
		return h.Do("GET", "/api/v1/rules/fw21/stats", nil, &st) == 200 && st.Running && !st.CatchingUp
	}, "canary not running")
	t0 := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	for k, readings := range []int{6, 6, 1} { // the third interval's reading closes the second
		for i, c := range clients {
			latency := 100 + i%5 // control k0..k4; canary c0..c4 at +30%
			if i >= 5 {
				latency = 130 + i%5
			}
			for s := range readings {
				at := t0.Add(time.Duration(k)*10*time.Second + time.Duration(s)*time.Second)
				payload := fmt.Sprintf(`{"latency":%d,"throughput":%d,"ts":%d}`, latency, 500+s, at.UnixMilli())
				if tok := c.Publish("devices/"+ids[i]+"/telemetry", 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
					t.Fatalf("publish: %v", tok.Error())
				}
			}
		}
	}
	hubtest.Eventually(t, 15*time.Second, func() bool {
		var page struct{ Results []any }
		return h.Do("GET", "/api/v1/canaries/fw21/results", nil, &page) == 200 && len(page.Results) == 2
	}, "want 2 canary results")

	script(t, "canary",
		[]string{"canary", "list"},
		[]string{"canary", "results", "fw21"},
		[]string{"canary", "results", "fw21", "--limit", "1", "-o", "csv"},
		[]string{"canary", "get", "fw21", "-o", "json"},
		[]string{"canary", "get", "nope"},
		[]string{"canary", "frobnicate"},
		[]string{"canary", "delete", "fw21"},
		[]string{"canary", "list"},
	)

	// apply replaces a canary (PUT), or creates it; without -f it is a usage error.
	data, _ := os.ReadFile(file)
	edited := filepath.Join(t.TempDir(), "edited.yaml")
	os.WriteFile(edited, append(data, []byte("threshold: 0.5\n")...), 0o600)
	for range 2 { // creates, then replaces
		if out, code := hubctl(t, "canary", "apply", "fw21", "-f", edited, "-o", "json"); code != exitOK || !strings.Contains(out, `"threshold": 0.5`) {
			t.Fatalf("canary apply: exit %d\n%s", code, out)
		}
	}
	if out, code := hubctl(t, "canary", "apply", "fw21"); code != exitUsage || !strings.Contains(out, "want -f FILE") {
		t.Errorf("canary apply without -f: exit %d\n%s", code, out)
	}
}
