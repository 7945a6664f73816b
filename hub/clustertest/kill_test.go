package clustertest

import (
	"testing"
	"time"

	"github.com/tributary-iot/tributary/hub/hubproc"
	"github.com/tributary-iot/tributary/hub/hubtest"
	"github.com/tributary-iot/tributary/streams/natscluster"
	"github.com/tributary-iot/tributary/tsdb/influxtest"
)

// TestHubKilledDuringQoS1Ingest: two hubd processes on a 3-node NATS cluster write to one
// InfluxDB; 50 devices publish QoS 1 to hub A, which is killed with SIGKILL. The devices
// reconnect to hub B and go on. Every PUBACKed message is in the stream and, once the
// InfluxDB writers catch up (hub A's unacknowledged batch is redelivered after the consumer's
// AckWait), in InfluxDB exactly once. The stream may hold a message twice when it was stored
// but its PUBACK died with the hub: the device sends it again (MQTT QoS 1 is at least once);
// InfluxDB still has one point, since the device's timestamp makes the point the same.
func TestHubKilledDuringQoS1Ingest(t *testing.T) {
	t.Parallel()
	const devices = 50
	nats := natscluster.ForTest(t, 3)
	db := influxtest.Shared(t).NewDB(t)
	sh := hubproc.Shared{NATSURL: nats.URL(), InfluxURL: db.URL, InfluxOrg: db.Org, InfluxToken: db.Token, InfluxBucket: db.Bucket}
	a, b := startPair(t, sh)

	tokens := createDevices(t, a.HTTP, "k", devices)
	f := startFleet(t, []string{a.MQTT, b.MQTT}, tokens, 100*time.Millisecond, 8)
	hubtest.Eventually(t, 30*time.Second, func() bool { return f.ackedN.Load() >= 10*devices }, "ingest through hub A did not start: %d acked", f.ackedN.Load())

	a.Kill()
	killedAt, ackedAtKill := time.Now(), f.ackedN.Load()
	t.Logf("hub A killed after %d acknowledged messages", ackedAtKill)
	hubtest.Eventually(t, 30*time.Second, func() bool { return f.ackedN.Load() >= ackedAtKill+20*devices }, "ingest did not resume on hub B: %d acked since the kill", f.ackedN.Load()-ackedAtKill)
	t.Logf("%d more acknowledged %s after the kill; %d reconnects", f.ackedN.Load()-ackedAtKill, time.Since(killedAt).Round(time.Millisecond), f.reconnect.Load())
	f.halt()
	if r := f.reconnect.Load(); r < devices {
		t.Errorf("%d reconnects, want every one of the %d devices to reconnect", r, devices)
	}

	acked := f.ackedSnapshot()
	inStream := streamSeqs(t, nats.URL())
	missing, dups, distinct, ex := inStream.check(acked)
	t.Logf("sent %d, acknowledged %d (%d attempts failed and were sent again, %d never acknowledged); stream: %d distinct, %d duplicates", f.sent.Load(), total(acked), f.retried.Load(), f.timedOut.Load(), distinct, dups)
	if missing > 0 {
		t.Fatalf("%d acknowledged messages are not in the stream (e.g. %s)", missing, ex)
	}
	// A duplicate needs a message stored whose PUBACK was lost with hub A: at most the
	// messages in flight when it died.
	if dups > devices*8 {
		t.Errorf("%d duplicates in the stream, more than the %d messages that can have been in flight at the kill", dups, devices*8)
	}

	var inInflux seqCounts
	hubtest.Eventually(t, 90*time.Second, func() bool {
		inInflux = influxSeqs(t, db)
		m, _, d, _ := inInflux.check(acked)
		return m == 0 && d == distinct
	}, "InfluxDB did not catch up with the stream")
	_, idups, idistinct, _ := inInflux.check(acked)
	if idups != 0 || idistinct != distinct {
		t.Errorf("InfluxDB holds %d distinct messages and %d duplicates; want the stream's %d, each once", idistinct, idups, distinct)
	}
}
