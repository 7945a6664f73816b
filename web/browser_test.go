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

// browserDeps finds chromium and playwright-core. Without them the test skips, except under
// CI=true, where it fails: `make deps` installs both.
func browserDeps(t *testing.T) (chromiumPath, node string) {
	t.Helper()
	chromiumPath = os.Getenv("CHROMIUM")
	if chromiumPath == "" {
		chromiumPath = "/usr/bin/chromium"
	}
	var missing []string
	if _, err := os.Stat(chromiumPath); err != nil {
		missing = append(missing, chromiumPath)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing = append(missing, "node")
	}
	if _, err := os.Stat("e2e/node_modules/playwright-core/package.json"); err != nil {
		missing = append(missing, "web/e2e/node_modules/playwright-core")
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("browser test needs %s: run `make deps` (apt-get install chromium; npm ci --prefix web/e2e)", strings.Join(missing, ", "))
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return chromiumPath, node
}

// TestDashboardInBrowser drives the dashboard in headless Chromium against a real hub: a device
// created over the API appears in the list and on the map, and a value published over MQTT is
// on the device's live chart within a second. Screenshots go to .artifacts/dashboard.
func TestDashboardInBrowser(t *testing.T) {
	chromiumPath, node := browserDeps(t)
	h := hubtest.Start(t)

	const id, name = "greenhouse-1", "Greenhouse North"
	token := h.CreateDevice(id, map[string]any{
		"name": name, "type": "climate", "tags": map[string]string{"site": "oslo", "zone": "a"},
		"location": map[string]float64{"lat": 59.9139, "lon": 10.7522},
	})
	for _, d := range []struct {
		id, name, typ string
		lat, lon      float64
	}{
		{"pump-7", "Pump 7", "pump", 59.95, 10.62}, {"gate-2", "Harbour gate", "gate", 59.89, 10.81},
		{"meter-12", "", "meter", 59.93, 10.70},
	} {
		fields := map[string]any{"type": d.typ, "location": map[string]float64{"lat": d.lat, "lon": d.lon}}
		if d.name != "" {
			fields["name"] = d.name
		}
		h.CreateDevice(d.id, fields)
	}

	client := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + h.MQTTAddr()).
		SetClientID(id).SetUsername(id).SetPassword(token).SetAutoReconnect(false))
	if tok := client.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("MQTT connect: %v", tok.Error())
	}
	defer client.Disconnect(100)
	publish := func(payload string) {
		t.Helper()
		tok := client.Publish("devices/"+id+"/telemetry", 1, false, payload)
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("MQTT publish: %v", tok.Error())
		}
	}
	// Some history for the charts to start with.
	start := time.Now().Add(-2 * time.Minute)
	for i := range 24 {
		ts := start.Add(time.Duration(i) * 5 * time.Second).UnixMilli()
		publish(fmt.Sprintf(`{"temperature":%.1f,"humidity":%d,"ts":%d}`, 21+2*float64(i%7)/7, 40+i%5, ts))
	}

	artifacts, _ := filepath.Abs("../.artifacts/dashboard")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "e2e/dashboard.mjs")
	cmd.Env = append(os.Environ(), "HUB_URL="+h.URL, "HUB_API_KEY="+hubtest.APIKey, "DEVICE_ID="+id,
		"DEVICE_NAME="+name, "ARTIFACTS="+artifacts, "CHROMIUM="+chromiumPath, "WANT_VALUE=42.5")
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
	var chartMS = -1
	done := false
	for lines.Scan() {
		line := lines.Text()
		t.Logf("browser: %s", line)
		switch {
		case line == "READY":
			publish(`{"temperature":42.5,"humidity":44}`)
		case strings.HasPrefix(line, "CHART_MS "):
			chartMS, _ = strconv.Atoi(strings.TrimPrefix(line, "CHART_MS "))
		case line == "DONE":
			done = true
		}
	}
	err = cmd.Wait()
	if err != nil || !done {
		t.Fatalf("browser script: %v\n%s\nscreenshots in %s", err, stderr.String(), artifacts)
	}
	if chartMS < 0 || chartMS > 1000 {
		t.Errorf("value published over MQTT reached the chart after %d ms, want within 1000 ms", chartMS)
	}
	t.Logf("MQTT publish to chart: %d ms; screenshots in %s", chartMS, artifacts)
}
