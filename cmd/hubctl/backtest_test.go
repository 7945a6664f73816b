package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tributary-iot/tributary/hub/hubtest"
)

// TestRulesBacktest: a rule counting each device's readings per minute, backtested over what
// one device sent (12 readings in one minute), alone and against a version that needs more
// than 20 readings.
func TestRulesBacktest(t *testing.T) {
	isolate(t)
	h := hubtest.Start(t)
	t.Setenv("HUB_URL", h.URL)
	t.Setenv("HUB_API_KEY", hubtest.APIKey)
	const sql = "SELECT device, count(*) AS n FROM 'devices/+/telemetry' GROUP BY device, TUMBLING(1m)"
	if code := h.Do("POST", "/api/v1/rules", map[string]any{"name": "per-minute", "sql": sql}, nil); code != 201 {
		t.Fatalf("create rule: %d", code)
	}
	token := h.CreateDevice("bt1", nil)
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + h.MQTTAddr()).SetClientID("bt1").SetUsername("bt1").SetPassword(token))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("MQTT connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	minute := time.Now().Add(-10 * time.Minute).Truncate(time.Minute)
	for i := range 12 {
		p := fmt.Sprintf(`{"t":%d,"ts":%d}`, i, minute.Add(time.Duration(i)*time.Second).UnixMilli())
		if tok := c.Publish("devices/bt1/telemetry", 1, false, p); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}

	out, code := hubctl(t, "rules", "backtest", "per-minute", "--from", "-1h")
	if code != 0 || !strings.Contains(out, "tenant default: 12 messages read") || !hasRow(out, "A", "per-minute", "12", "12", "0", "0", "0", "1") {
		t.Fatalf("backtest of the rule: exit %d\n%s", code, out)
	}
	out, code = hubctl(t, "rules", "backtest", "per-minute", "--from", "-1h", "--compare-sql", sql+" HAVING count(*) > 20")
	if code != 0 || !hasRow(out, "B", "per-minute", "12", "12", "0", "0", "1", "0") || !strings.Contains(out, "Only in A: 1, only in B: 0, changed: 0, the same: 0.") {
		t.Fatalf("backtest against a stricter version: exit %d\n%s", code, out)
	}
	out, code = hubctl(t, "rules", "backtest", "nope")
	if code == 0 || !strings.Contains(out, `no rule named "nope"`) {
		t.Fatalf("backtest of an unknown rule: exit %d\n%s", code, out)
	}
	if out, code = hubctl(t, "rules", "backtest"); code == 0 || !strings.Contains(out, "want a rule name or --sql") {
		t.Fatalf("backtest without a version: exit %d\n%s", code, out)
	}
}

// hasRow reports whether out has a table row of exactly these cells.
func hasRow(out string, cells ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		if strings.Join(strings.Fields(line), " ") == strings.Join(cells, " ") {
			return true
		}
	}
	return false
}
