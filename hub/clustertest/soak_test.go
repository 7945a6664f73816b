package clustertest

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/hub/hubproc"
	"github.com/tributary-iot/tributary/hub/hubtest"
	"github.com/tributary-iot/tributary/streams/natscluster"
	"github.com/tributary-iot/tributary/tsdb/influxtest"
)

// TestSoak runs two hubd processes on a 3-node NATS cluster with InfluxDB under steady load —
// 50 devices publishing QoS 1 ten times a second each, an SSE subscriber on each hub — for
// $HUB_SOAK (e.g. HUB_SOAK=10m; without it the test is skipped, so CI stays fast). Every
// 10 s it samples each hub's goroutines, heap in use and RSS; after a warm-up of a fifth of
// the run, the last third's peak must stay within bounds of the first third's: goroutines
// +10% + 20, heap +50% + 16 MiB, RSS +50% + 32 MiB. Nothing acknowledged may be missing.
func TestSoak(t *testing.T) {
	v := os.Getenv("HUB_SOAK")
	if v == "" {
		t.Skip("set HUB_SOAK=10m (a Go duration) to run the soak test")
	}
	dur, err := time.ParseDuration(v)
	if err != nil || dur < time.Minute {
		t.Fatalf("HUB_SOAK=%q: want a duration of at least 1m", v)
	}
	const devices = 50
	nats := natscluster.ForTest(t, 3)
	db := influxtest.Shared(t).NewDB(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sh := hubproc.Shared{NATSURL: nats.URL(), InfluxURL: db.URL, InfluxOrg: db.Org, InfluxToken: db.Token, InfluxBucket: db.Bucket}
	var hubs []*hubproc.Child
	for range 2 {
		h, err := hubproc.StartShared(ctx, sh, "-test.run=^$")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.Stop)
		hubs = append(hubs, h)
	}
	tokens := createDevices(t, hubs[0].HTTP, "s", devices)
	for _, h := range hubs {
		go sseDrain(ctx, h.HTTP)
	}
	// Devices alternate between the hubs.
	var fleets []*fleet
	for i, h := range hubs {
		part := map[string]string{}
		for id, tok := range tokens {
			if int(id[len(id)-1]-'0')%2 == i {
				part[id] = tok
			}
		}
		fleets = append(fleets, startFleet(t, []string{h.MQTT, hubs[1-i].MQTT}, part, 100*time.Millisecond, 8))
	}

	type sample struct {
		at         time.Duration
		goroutines [2]float64
		heap, rss  [2]float64
		acked      int64
	}
	var samples []sample
	start := time.Now()
	for time.Since(start) < dur {
		time.Sleep(10 * time.Second)
		s := sample{at: time.Since(start).Round(time.Second)}
		for i, h := range hubs {
			m := metrics(t, h.HTTP)
			s.goroutines[i], s.heap[i] = m["go_goroutines"], m["go_memstats_heap_inuse_bytes"]
			rss, err := h.RSS()
			if err != nil {
				t.Fatal(err)
			}
			s.rss[i] = float64(rss)
		}
		for _, f := range fleets {
			s.acked += f.ackedN.Load()
		}
		samples = append(samples, s)
		t.Logf("%6s  acked %7d  goroutines %4.0f %4.0f  heap %5.1f %5.1f MiB  rss %5.1f %5.1f MiB", s.at, s.acked,
			s.goroutines[0], s.goroutines[1], s.heap[0]/(1<<20), s.heap[1]/(1<<20), s.rss[0]/(1<<20), s.rss[1]/(1<<20))
	}
	acked := map[string][]int{}
	for _, f := range fleets {
		f.halt()
		for id, s := range f.ackedSnapshot() {
			acked[id] = s
		}
	}

	warm := len(samples) / 5
	steady := samples[warm:]
	third := max(len(steady)/3, 1)
	first, last := steady[:third], steady[len(steady)-third:]
	peak := func(ss []sample, f func(sample) float64) float64 {
		return slices.Max(mapSamples(ss, f))
	}
	median := func(ss []sample, f func(sample) float64) float64 {
		v := mapSamples(ss, f)
		slices.Sort(v)
		return v[len(v)/2]
	}
	for i := range hubs {
		checks := []struct {
			what     string
			f        func(sample) float64
			rel, abs float64
		}{
			{"goroutines", func(s sample) float64 { return s.goroutines[i] }, 1.1, 20},
			{"heap in use", func(s sample) float64 { return s.heap[i] }, 1.5, 16 << 20},
			{"RSS", func(s sample) float64 { return s.rss[i] }, 1.5, 32 << 20},
		}
		for _, c := range checks {
			base, top := median(first, c.f), peak(last, c.f)
			t.Logf("hub %d %s: first third median %.0f, last third peak %.0f (%+.1f%%)", i, c.what, base, top, 100*(top-base)/base)
			if top > base*c.rel+c.abs {
				t.Errorf("hub %d %s grew from %.0f to %.0f over the run", i, c.what, base, top)
			}
		}
	}
	rate := float64(total(acked)) / dur.Seconds()
	missing, dups, distinct, ex := streamSeqs(t, nats.URL()).check(acked)
	t.Logf("%s: %d acknowledged (%.0f/s), %d distinct in the stream, %d duplicates", dur, total(acked), rate, distinct, dups)
	if missing > 0 {
		t.Errorf("%d acknowledged messages missing from the stream (e.g. %s)", missing, ex)
	}
}

func mapSamples[S any](ss []S, f func(S) float64) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = f(s)
	}
	return out
}

// metrics reads the unlabelled series of a hub's /metrics.
func metrics(t *testing.T, httpAddr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	for sc := bufio.NewScanner(resp.Body); sc.Scan(); {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if f, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = f
		}
	}
	return out
}

// sseDrain follows every device's telemetry over SSE until ctx ends, so the soak includes
// the fan-out to a live HTTP subscriber.
func sseDrain(ctx context.Context, httpAddr string) {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+httpAddr+"/api/v1/stream?topic=devices/%2B/telemetry", nil)
	req.Header.Set("Authorization", "Bearer "+hubtest.APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak sse:", err)
		return
	}
	defer resp.Body.Close()
	for sc := bufio.NewScanner(resp.Body); sc.Scan(); {
	}
}
