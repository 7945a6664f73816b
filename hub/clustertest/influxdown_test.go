package clustertest

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/hub/hubtest"
	"github.com/tributary-iot/tributary/streams/natscluster"
	"github.com/tributary-iot/tributary/tsdb/influxtest"
)

// influxOutage is how long InfluxDB stays down in TestInfluxDownDuringIngest: 60 s, or
// $HUB_INFLUX_OUTAGE (a Go duration) to try others.
func influxOutage(t *testing.T) time.Duration {
	v := os.Getenv("HUB_INFLUX_OUTAGE")
	if v == "" {
		return 60 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("HUB_INFLUX_OUTAGE=%q: want a positive duration such as 60s", v)
	}
	return d
}

// TestInfluxDownDuringIngest: two hubs on a 3-node NATS cluster share one InfluxDB, which goes
// down (its address refuses connections and open ones are cut; see gate) while 10 devices
// publish QoS 1, and stays down for a minute. Ingest goes on (the hubs stay ready and
// acknowledge), the writers report the failure on /readyz, and once InfluxDB is back the
// backlog drains: every acknowledged message is stored once.
func TestInfluxDownDuringIngest(t *testing.T) {
	t.Parallel()
	const devices = 10
	outage := influxOutage(t)
	c := natscluster.ForTest(t, 3)
	db := influxtest.Shared(t).NewDB(t)
	g := newGate(t, strings.TrimPrefix(db.URL, "http://"))
	viaGate := db
	viaGate.URL = g.URL()
	a := hubtest.Start(t, onCluster(c), withInflux(viaGate))
	b := hubtest.Start(t, onCluster(c), withInflux(viaGate))
	tokens := createDevices(t, a.HTTPAddr(), "i", devices)
	f := startFleet(t, []string{a.MQTTAddr(), b.MQTTAddr()}, tokens, 100*time.Millisecond, 8)
	hubtest.Eventually(t, 30*time.Second, func() bool { return len(influxSeqs(t, db)) == devices }, "telemetry of every device did not reach InfluxDB before the outage")

	g.down()
	downAt, ackedAtKill := time.Now(), f.ackedN.Load()
	// A writer notices on its next write and says so on /readyz, while the hub stays ready.
	hubtest.Eventually(t, 30*time.Second, func() bool {
		return !writerHealthy(t, a) || !writerHealthy(t, b)
	}, "no hub reports the InfluxDB writer unhealthy on /readyz")
	for time.Since(downAt) < outage {
		time.Sleep(time.Second) // the outage: devices keep publishing
	}
	if got := f.ackedN.Load() - ackedAtKill; got < int64(outage/(100*time.Millisecond))*devices/2 {
		t.Errorf("only %d messages acknowledged during the %s outage: ingest should go on", got, outage)
	}
	g.up()
	restartedAt := time.Now()
	time.Sleep(time.Second) // a little traffic after the restart too
	f.halt()

	acked := f.ackedSnapshot()
	stream := streamSeqs(t, c.URL())
	missing, _, distinct, ex := stream.check(acked)
	if missing > 0 {
		t.Fatalf("%d acknowledged messages are not in the stream (e.g. %s)", missing, ex)
	}
	var got seqCounts
	hubtest.Eventually(t, 90*time.Second, func() bool {
		got = influxSeqs(t, db)
		m, _, d, _ := got.check(acked)
		return m == 0 && d == distinct
	}, "the backlog did not drain into InfluxDB")
	_, dups, n, _ := got.check(acked)
	t.Logf("outage %s; %d acknowledged (%d during the outage), %d in InfluxDB, drained %s after the restart",
		outage, total(acked), f.ackedN.Load()-ackedAtKill, n, time.Since(restartedAt).Round(100*time.Millisecond))
	if dups != 0 || n != distinct {
		t.Errorf("InfluxDB holds %d messages and %d duplicates; want the stream's %d, once each", n, dups, distinct)
	}
	hubtest.Eventually(t, 30*time.Second, func() bool { return writerHealthy(t, a) && writerHealthy(t, b) }, "writers still unhealthy after the backlog drained")
}

// writerHealthy reads the InfluxDB writer's health from h's /readyz, which must answer 200.
func writerHealthy(t *testing.T, h *hubtest.Hub) bool {
	t.Helper()
	resp, err := http.Get(h.URL + "/readyz")
	if err != nil {
		t.Fatalf("readyz: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Components struct {
			Writer struct{ Healthy bool } `json:"influxdb_writer"`
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz: %s %v; the hub must stay ready while InfluxDB is down", resp.Status, err)
	}
	return body.Components.Writer.Healthy
}
