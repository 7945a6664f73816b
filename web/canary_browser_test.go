package web_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tributary-iot/tributary/hub/hubtest"
)

// TestCanariesInBrowser opens the Canaries page in headless Chromium against a real hub: a
// canary whose devices report 30% higher latency than the control shows a failing verdict
// with score 0.5 in the list, latency classed high in its interval table with a chart, and the
// next interval appears live when the devices' readings close it.
func TestCanariesInBrowser(t *testing.T) {
	chromiumPath, node := browserDeps(t)
	h := hubtest.Start(t)

	if code := h.Do("POST", "/api/v1/canaries", map[string]any{
		"name": "fw21", "interval": "10s", "lateness": "0s", "idle_timeout": "0s",
		"canary_group": map[string]any{"tags": []string{"fw:2.1"}}, "control_group": map[string]any{"tags": []string{"fw:2.0"}},
		"metrics": []map[string]any{{"field": "latency"}, {"field": "throughput", "better": "higher"}},
	}, nil); code != 201 {
		t.Fatalf("create canary: %d", code)
	}
	var clients []paho.Client
	var ids []string
	for i := range 10 {
		id, fw := fmt.Sprintf("k%d", i), "2.0"
		if i >= 5 {
			id, fw = fmt.Sprintf("c%d", i-5), "2.1"
		}
		token := h.CreateDevice(id, map[string]any{"type": "gateway", "tags": map[string]string{"fw": fw}})
		c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + h.MQTTAddr()).SetClientID(id).SetUsername(id).SetPassword(token).SetAutoReconnect(false))
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
	t0 := time.Now().Add(-10 * time.Minute).Truncate(10 * time.Second)
	// interval publishes readings of interval k; the first reading of k closes k-1.
	interval := func(k, readings int) {
		for i, c := range clients {
			latency := 100 + i%5
			if i >= 5 {
				latency = 130 + i%5
			}
			for s := range readings {
				at := t0.Add(time.Duration(k)*10*time.Second + time.Duration(s)*time.Second)
				tok := c.Publish("devices/"+ids[i]+"/telemetry", 1, false, fmt.Sprintf(`{"latency":%d,"throughput":500,"ts":%d}`, latency, at.UnixMilli()))
				if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
					t.Fatalf("publish: %v", tok.Error())
				}
			}
		}
	}
	interval(0, 6)
	interval(1, 6) // closes interval 0
	hubtest.Eventually(t, 10*time.Second, func() bool {
		var page struct{ Results []any }
		return h.Do("GET", "/api/v1/canaries/fw21/results", nil, &page) == 200 && len(page.Results) == 1
	}, "no canary result")

	artifacts, _ := filepath.Abs("../.artifacts/dashboard")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "e2e/canaries.mjs")
	cmd.Env = append(os.Environ(), "HUB_URL="+h.URL, "HUB_API_KEY="+hubtest.APIKey, "CANARY=fw21",
		"ARTIFACTS="+artifacts, "CHROMIUM="+chromiumPath)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	liveMS, done := -1, false
	for lines.Scan() {
		line := lines.Text()
		t.Logf("browser: %s", line)
		switch {
		case line == "READY":
			interval(2, 1) // closes interval 1
		case strings.HasPrefix(line, "LIVE_MS "):
			liveMS, _ = strconv.Atoi(strings.TrimPrefix(line, "LIVE_MS "))
		case line == "DONE":
			done = true
		}
	}
	if err := cmd.Wait(); err != nil || !done {
		t.Fatalf("browser script: %v\n%s\nscreenshots in %s", err, stderr.String(), artifacts)
	}
	t.Logf("interval closed to page: %d ms; screenshots in %s", liveMS, artifacts)
}
