package hub_test

import (
	"fmt"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/hub"
	"github.com/tributary-iot/tributary/hub/hubtest"
	"github.com/tributary-iot/tributary/tsdb/influxtest"
)

// TestTelemetryQueryBothBackends publishes telemetry with known timestamps over MQTT and CoAP
// and checks the query API's downsampled answers, once from InfluxDB and once from the stream.
func TestTelemetryQueryBothBackends(t *testing.T) {
	influx := influxtest.Start(t)
	for _, backend := range []string{"influxdb", "stream"} {
		t.Run(backend, func(t *testing.T) {
			h := hubtest.Start(t, func(c *hub.Config) {
				if backend == "influxdb" {
					c.InfluxURL, c.InfluxBucket = influx.URL, influx.Bucket
				}
			})
			token := h.CreateDevice("meter-1", map[string]any{"type": "meter"})
			dev := mqttConnect(t, h.MQTTAddr(), "meter-1", "meter-1", token)
			// 12 values one per 10 s from a round minute: two one-minute windows.
			base := time.Now().Add(-10 * time.Minute).Truncate(time.Minute)
			var want [2][]float64
			for i := range 12 {
				v := float64(i*i) / 4
				want[i/6] = append(want[i/6], v)
				p := fmt.Sprintf(`{"power":%g,"ts":%d}`, v, base.Add(time.Duration(i)*10*time.Second).UnixMilli())
				if tok := dev.Publish("devices/meter-1/telemetry", 1, false, p); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
					t.Fatal(tok.Error())
				}
			}
			mean := func(xs []float64) float64 {
				s := 0.0
				for _, x := range xs {
					s += x
				}
				return s / float64(len(xs))
			}
			var ans struct {
				Points []struct {
					Time  time.Time
					Value float64
				}
				Error string
			}
			path := fmt.Sprintf("/api/v1/devices/meter-1/telemetry?field=power&from=%s&to=%s&every=1m&agg=mean",
				base.Format(time.RFC3339), base.Add(2*time.Minute).Format(time.RFC3339))
			hubtest.Eventually(t, 15*time.Second, func() bool {
				ans.Points = nil
				return h.Do("GET", path, nil, &ans) == http.StatusOK && len(ans.Points) == 2
			}, "telemetry query: %d points (%s), want 2", len(ans.Points), ans.Error)
			for i, p := range ans.Points {
				if !p.Time.Equal(base.Add(time.Duration(i)*time.Minute)) || math.Abs(p.Value-mean(want[i])) > 1e-9 {
					t.Errorf("window %d: got %v %g, want %v %g", i, p.Time, p.Value, base.Add(time.Duration(i)*time.Minute), mean(want[i]))
				}
			}
			var latest struct {
				Fields map[string]struct{ Value float64 }
			}
			if code := h.Do("GET", "/api/v1/devices/meter-1/telemetry/latest", nil, &latest); code != 200 || latest.Fields["power"].Value != want[1][5] {
				t.Errorf("latest: %d %+v, want power %g", code, latest.Fields, want[1][5])
			}
			var bad struct{ Error string }
			if code := h.Do("GET", "/api/v1/devices/meter-1/telemetry?field=power&agg=median&every=1m", nil, &bad); code != 400 || bad.Error == "" {
				t.Errorf("bad agg: %d %q, want 400 naming the problem", code, bad.Error)
			}
			if code := h.Do("GET", "/api/v1/devices/nobody/telemetry?field=power", nil, &bad); code != 404 {
				t.Errorf("unknown device: %d, want 404", code)
			}
			if backend == "influxdb" {
				var ready struct {
					Status     string
					Components map[string]struct {
						Written uint64
						Healthy bool
					}
				}
				h.Do("GET", "/readyz", nil, &ready)
				if w := ready.Components["influxdb_writer"]; ready.Status != "ready" || w.Written < 12 || !w.Healthy {
					t.Errorf("/readyz = %+v, want the writer healthy with 12 written", ready)
				}
			}
		})
	}
}
