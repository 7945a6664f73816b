package sql

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streams/window"
)

const spikeQuery = `SELECT device, spike(temp, 0.99, 10).score AS s, spike(temp, 0.99, 10).anomaly AS a,
	changepoint(temp, 0.99, 20).anomaly AS cp, count(*) AS n
	FROM 'devices/+/telemetry' GROUP BY device, TUMBLING(10s) HAVING spike(temp, 0.99, 10).anomaly OR cp`

func TestAnomalyQueriesCompile(t *testing.T) {
	r, err := Compile("r", spikeQuery)
	if err != nil {
		t.Fatal(err)
	}
	var aggs []string
	for _, a := range r.Plan.Aggregates {
		aggs = append(aggs, a.Name)
	}
	// .score and .anomaly of one call share its state.
	eq(t, "aggregates", aggs, []string{"spike(temp, 0.99, 10)", "changepoint(temp, 0.99, 20)", "count(*)"})
	q, _ := Parse("select device, Spike(t, 0.99, 60).SCORE s from 'devices/#' group by device, tags.site, tumbling(1m) outliers(s) by tags.site expect 0.05 having outlier")
	eq(t, "canonical", q.String(), "SELECT device, spike(t, 0.99, 60).score AS s FROM 'devices/#' GROUP BY device, tags.site, TUMBLING(1m) OUTLIERS(s) BY tags.site EXPECT 0.05 HAVING outlier")
	r, err = CompileQuery("r", q)
	if err != nil {
		t.Fatal(err)
	}
	if f := r.Plan.Fleet; f == nil || !slices.Equal(f.Fields, []int{1}) || !slices.Equal(f.Peers, []int{1}) || f.Expect != 0.05 {
		t.Fatalf("fleet: %+v", f)
	}
	r, err = Compile("r", "SELECT device, avg(t) AS t, max(v) AS v FROM 'devices/#' GROUP BY device, HOPPING(2m, 1m) OUTLIERS(t, v)")
	if err != nil || r.Plan.Fleet.Expect != 0.01 || len(r.Plan.Fleet.Peers) != 0 {
		t.Fatalf("default expect: %v %+v", err, r.Plan.Fleet)
	}
}

func TestAnomalyCompileErrors(t *testing.T) {
	const from = " FROM 'devices/#' GROUP BY device, "
	for _, c := range []struct{ src, want string }{
		{"SELECT spike(t, 0.99, 10) AS s" + from + "TUMBLING(1m)", "col 8: spike returns a record: use spike(x, confidence, n).score or .anomaly"},
		{"SELECT spike(t, 0.99, 10).level AS s" + from + "TUMBLING(1m)", `col 8: spike has no field "level"`},
		{"SELECT spike(t, 0.99).score AS s" + from + "TUMBLING(1m)", "col 8: spike takes 3 arguments, got 2"},
		{"SELECT spike(*).score AS s" + from + "TUMBLING(1m)", "col 8: spike takes 3 arguments, got 1"},
		{"SELECT spike(t, 1.5, 10).score AS s" + from + "TUMBLING(1m)", "col 8: spike: confidence must be between 0 and 1 (exclusive), like 0.99, got 1.5"},
		{"SELECT spike(t, 0, 10).score AS s" + from + "TUMBLING(1m)", "spike: confidence must be between 0 and 1"},
		{"SELECT changepoint(t, 0.9, 4).score AS s" + from + "TUMBLING(1m)", "col 8: changepoint: history must be a whole number of points from 8 to 10000, got 4"},
		{"SELECT spike(t, 0.9, 10.5).score AS s" + from + "TUMBLING(1m)", "history must be a whole number"},
		{"SELECT spike(t, x, 10).score AS s" + from + "TUMBLING(1m)", "spike: parameter x must be a constant number"},
		{"SELECT spike(t, 0.9, 10).score AS s" + from + "HOPPING(1m, 30s)", "needs windows that do not overlap: use TUMBLING, SESSION or COUNTWINDOW, not HOPPING"},
		{"SELECT spike(t, 0.9, 10).score AS s" + from + "SLIDING(1m)", "not SLIDING"},
		{"SELECT avg(t).score AS s" + from + "TUMBLING(1m)", "col 8: avg returns a single value, not a record: remove .score (fields are for changepoint, spike)"},
		{"SELECT abs(t).x AS s" + from + "TUMBLING(1m)", "abs returns a single value"},
		{"SELECT device FROM 'devices/#' WHERE spike(t, 0.9, 10).anomaly GROUP BY device, TUMBLING(1m)", "aggregate function spike is not allowed in WHERE"},
		{"SELECT avg(spike(t, 0.9, 10).score) AS s" + from + "TUMBLING(1m)", "aggregate function spike cannot be used inside another aggregate"},
		{"SELECT spike(t, 0.9, 10). AS s" + from + "TUMBLING(1m)", "expected a field name after '.', like .score, found 'AS'"},
		// OUTLIERS
		{"SELECT avg(t) AS t" + from + "TUMBLING(1m) OUTLIERS(x)", "OUTLIERS(x): not a SELECT column (have t); name an aggregate with AS"},
		{"SELECT device AS d, avg(t) AS t" + from + "TUMBLING(1m) OUTLIERS(d)", "OUTLIERS(d): column d is a string (device); OUTLIERS compares numbers"},
		{"SELECT avg(t) > 3 AS hot" + from + "TUMBLING(1m) OUTLIERS(hot)", "OUTLIERS(hot): column hot is a bool"},
		{"SELECT spike(t, 0.9, 10).anomaly AS a" + from + "TUMBLING(1m) OUTLIERS(a)", "column a is a bool"},
		{"SELECT avg(t) AS t, outlier_score * 2 AS x" + from + "TUMBLING(1m) OUTLIERS(t, x)", "OUTLIERS(x): column x uses the outlier verdict itself"},
		{"SELECT avg(t) AS t" + from + "TUMBLING(1m) OUTLIERS(t, t)", "OUTLIERS: column t appears twice"},
		{"SELECT avg(t) AS t" + from + "SESSION(1m) OUTLIERS(t)", "OUTLIERS compares the groups of each window and needs TUMBLING or HOPPING windows, not SESSION"},
		{"SELECT avg(t) AS t" + from + "TUMBLING(1m) OUTLIERS(t) BY tags.site", "OUTLIERS ... BY tags.site: peers are grouped by GROUP BY keys; add tags.site to GROUP BY"},
		{"SELECT avg(t) AS t FROM 'devices/#' GROUP BY device, TUMBLING(1m) OUTLIERS(t) BY device", "OUTLIERS: every group would be alone among its peers"},
		{"SELECT avg(t) AS t FROM 'devices/#' GROUP BY TUMBLING(1m) OUTLIERS(t)", "OUTLIERS: every group would be alone among its peers"},
		{"SELECT avg(t) AS t" + from + "TUMBLING(1m) OUTLIERS(t) EXPECT 0.5", "EXPECT: expected outlier share must be above 0 and at most 0.25, like 0.01, got 0.5"},
		{"SELECT avg(t) AS t" + from + "TUMBLING(1m) OUTLIERS(t) EXPECT 0", "EXPECT must be above 0 and at most 0.25, got 0"},
		{"SELECT avg(t) AS t" + from + "TUMBLING(1m) OUTLIERS(t) EXPECT x", "expected the expected share of outliers after EXPECT, like 0.01, found 'x'"},
		{"SELECT avg(t) AS t" + from + "TUMBLING(1m) OUTLIERS()", "expected a SELECT column name in OUTLIERS(...), found ')'"},
		{"SELECT avg(t) AS t" + from + "TUMBLING(1m) OUTLIERS(t) WHERE", "expected EXPECT, HAVING or end of query, found 'WHERE'"},
		{"SELECT avg(t) AS outlier" + from + "TUMBLING(1m) OUTLIERS(outlier)", "column outlier is added by OUTLIERS; name this column otherwise"},
		{"SELECT avg(t) AS t" + from + "TUMBLING(1m) HAVING outlier", "unknown column outlier in HAVING"},
	} {
		_, err := Compile("r", c.src)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s:\n got %v\nwant %s", c.src, err, c.want)
		}
	}
}

// run feeds events through a compiled rule and returns the results of the run (flushed).
func run(t *testing.T, src string, events []window.Event, snapshotAt int) []window.Result {
	t.Helper()
	r, err := Compile("r", src)
	if err != nil {
		t.Fatal(err)
	}
	e, err := window.New(r.Plan, window.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out []window.Result
	for i, ev := range events {
		if i == snapshotAt { // restart from a snapshot: results must not change
			snap, err := e.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			if e, err = window.New(r.Plan, window.Options{}); err != nil {
				t.Fatal(err)
			}
			if err := e.Restore(snap); err != nil {
				t.Fatal(err)
			}
		}
		res, _ := e.Process(ev)
		out = append(out, res...)
	}
	return append(out, e.Flush()...)
}

var t0 = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

func TestSpikeInRules(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	var events []window.Event
	spikeAt := 300 // seconds
	for s := range 600 {
		for _, dev := range []string{"a", "b"} {
			v := 20 + r.NormFloat64()*0.2
			if dev == "a" && s == spikeAt {
				v += 5
			}
			if dev == "b" { // a constant series: never a spike
				v = 21
			}
			events = append(events, window.Event{Time: t0.Add(time.Duration(s) * time.Second), Device: dev,
				Fields: map[string]any{"temp": v}, Seq: uint64(len(events) + 1)})
		}
	}
	const q = `SELECT device, spike(temp, 0.999, 30).score AS s, spike(temp, 0.999, 30).anomaly AS a, count(*) AS n
		FROM 'devices/+/telemetry' GROUP BY device, TUMBLING(10s) HAVING a`
	want := run(t, q, events, -1)
	if len(want) != 1 || want[0].Group["device"] != "a" || !want[0].WindowStart.Equal(t0.Add(300*time.Second)) {
		t.Fatalf("want one spike window of device a at 10:05:00, got %s", summary(want))
	}
	if s := want[0].Values["s"].(float64); s < 10 {
		t.Errorf("score %g", s)
	}
	// Restoring a snapshot anywhere gives the same results: the history is in the snapshot.
	for _, at := range []int{1, 59, 60, 61, 598, 599, 600, 601, 900} {
		if got := run(t, q, events, at); !reflect.DeepEqual(got, want) {
			t.Fatalf("snapshot at event %d: got %s, want %s", at, summary(got), summary(want))
		}
	}
	// Within the lateness, arrival order does not matter: points enter the history in event
	// time order.
	shuffled := slices.Clone(events)
	for i := 0; i+20 <= len(shuffled); i += 20 { // shuffle within 10 s windows
		r.Shuffle(20, func(a, b int) { shuffled[i+a], shuffled[i+b] = shuffled[i+b], shuffled[i+a] })
	}
	if got := run(t, q, shuffled, -1); !reflect.DeepEqual(scores(got), scores(want)) {
		t.Fatalf("shuffled within windows: %s, want %s", summary(got), summary(want))
	}
}

func scores(rs []window.Result) []string {
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprint(r.GroupKey, r.WindowStart, r.Values["s"], r.Values["a"]))
	}
	return out
}

func summary(rs []window.Result) string {
	var b strings.Builder
	for _, r := range rs {
		v, _ := json.Marshal(r.Values)
		fmt.Fprintf(&b, "\n  %s [%s) %s", r.GroupKey, r.WindowStart.Format("15:04:05"), v)
	}
	return b.String()
}

func TestOutliersInRules(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	var events []window.Event
	for s := range 180 {
		for i := range 30 {
			dev := fmt.Sprintf("d%02d", i)
			site := "north"
			if i >= 26 {
				site = "south" // 4 devices: too few for a verdict
			}
			temp := 20 + r.NormFloat64()
			if dev == "d07" && s >= 60 && s < 120 { // shifted during the second minute
				temp += 4
			}
			events = append(events, window.Event{Time: t0.Add(time.Duration(s) * time.Second), Device: dev,
				Tags: map[string]string{"site": site}, Fields: map[string]any{"temp": temp, "vib": 1 + r.NormFloat64()*0.1}, Seq: uint64(len(events) + 1)})
		}
	}
	got := run(t, `SELECT device, tags.site, avg(temp) AS t, avg(vib) AS v FROM 'devices/+/telemetry'
		GROUP BY device, tags.site, TUMBLING(1m) OUTLIERS(t, v) BY tags.site EXPECT 0.02`, events, 1000)
	if len(got) != 3*30 {
		t.Fatalf("%d results, want 90", len(got))
	}
	for _, res := range got {
		dev, site := res.Group["device"], res.Group["tags.site"]
		minute := res.WindowStart.Sub(t0) / time.Minute
		v := res.Values
		if site == "south" {
			if v["outlier"] != nil || v["outlier_score"] != nil || v["outlier_peers"] != 4.0 ||
				v["outlier_warning"] != "peer group has 4 members with values; outliers need at least 6" {
				t.Errorf("%s minute %d: %v", dev, minute, v)
			}
			continue
		}
		want := dev == "d07" && minute == 1
		if v["outlier"] != want || v["outlier_peers"] != 26.0 || v["outlier_warning"] != nil {
			t.Errorf("%s minute %d: %v, want outlier=%v", dev, minute, v, want)
		}
	}
	// HAVING on the verdict keeps only the outliers.
	got = run(t, `SELECT device, avg(temp) AS t, outlier_score AS how_far FROM 'devices/+/telemetry'
		WHERE tags.site = 'north' GROUP BY device, TUMBLING(1m) OUTLIERS(t) HAVING outlier`, events, -1)
	if len(got) != 1 || got[0].Group["device"] != "d07" || got[0].Values["how_far"].(float64) < 5 {
		t.Fatalf("HAVING outlier: %s", summary(got))
	}
}

// TestOutliersHopping: with HOPPING windows, several windows of each device close together;
// each is judged with the groups of the same window only.
func TestOutliersHopping(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	var events []window.Event
	for s := range 240 {
		for i := range 12 {
			temp := 20 + r.NormFloat64()*0.1
			if i == 3 && s >= 60 && s < 120 { // hot during the second minute only
				temp += 2
			}
			events = append(events, window.Event{Time: t0.Add(time.Duration(s) * time.Second), Device: fmt.Sprintf("d%02d", i),
				Fields: map[string]any{"temp": temp}, Seq: uint64(len(events) + 1)})
		}
	}
	// Each minute closes two overlapping windows' worth of rows at once, and Flush the last
	// ones together.
	got := run(t, `SELECT device, avg(temp) AS t FROM 'devices/+/telemetry' GROUP BY device, HOPPING(2m, 1m) OUTLIERS(t) HAVING outlier`, events, -1)
	var found []string
	for _, res := range got {
		found = append(found, fmt.Sprintf("%s@%s", res.Group["device"], res.WindowStart.Sub(t0)))
	}
	// Windows [−1m, 1m), [0, 2m), [1m, 3m), [2m, 4m), [3m, 5m): d03 is hot in [1m, 2m), so it
	// stands apart in [0, 2m) and [1m, 3m).
	if !slices.Equal(found, []string{"d03@0s", "d03@1m0s"}) {
		t.Fatalf("outliers %v, want d03@0s, d03@1m0s%s", found, summary(got))
	}
}

// TestSeriesHistoriesExpire: the spike history of a device that stops reporting is dropped once
// the watermark is a day past its last window (the TTL for a 30-point history of 1-minute
// windows), so the engine's groups and snapshot shrink to the devices still reporting; a device
// that comes back starts a fresh history, and the others' scores are as if nothing expired.
// Expiry follows event time, so restoring a snapshot anywhere changes nothing.
func TestSeriesHistoriesExpire(t *testing.T) {
	const q = `SELECT device, spike(temp, 0.99, 30).score AS s FROM 'devices/+/telemetry' GROUP BY device, TUMBLING(1m)`
	r, err := Compile("r", q)
	if err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(3, 3))
	var events []window.Event
	add := func(at time.Duration, dev string) {
		events = append(events, window.Event{Time: t0.Add(at), Device: dev,
			Fields: map[string]any{"temp": 20 + rnd.NormFloat64()}, Seq: uint64(len(events) + 1)})
	}
	// 100 devices for an hour, then only 10 of them, every 10 minutes for 26 hours; then
	// device d99 comes back.
	for m := range 60 {
		for d := range 100 {
			add(time.Duration(m)*time.Minute, fmt.Sprintf("d%02d", d))
		}
	}
	for m := 60; m < 26*60; m += 10 {
		for d := range 10 {
			add(time.Duration(m)*time.Minute, fmt.Sprintf("d%02d", d))
		}
	}
	half := len(events)
	back := 26*time.Hour + 5*time.Minute
	for i := range 40 {
		add(back+time.Duration(i)*time.Minute, "d99")
		add(back+time.Duration(i)*time.Minute, "d00")
	}

	e, err := window.New(r.Plan, window.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var before []byte
	var results []window.Result
	for i, ev := range events {
		if i == 6000 { // the end of the first hour
			before, _ = e.Snapshot()
		}
		if i == half {
			if g := e.Stats().Groups; g != 10 {
				t.Errorf("a day after 90 devices went silent the engine holds %d groups, want the 10 still reporting", g)
			}
			after, _ := e.Snapshot()
			t.Logf("snapshot with 100 devices' histories %d bytes; after 90 expired %d bytes", len(before), len(after))
			if len(after)*5 > len(before) {
				t.Errorf("snapshot %d bytes after 90 of 100 histories expired, was %d", len(after), len(before))
			}
		}
		res, _ := e.Process(ev)
		results = append(results, res...)
	}
	results = append(results, e.Flush()...)

	// d99's results after its return equal a fresh engine's over the same readings.
	fresh := run(t, q, slices.DeleteFunc(slices.Clone(events[half:]), func(ev window.Event) bool { return ev.Device != "d99" }), -1)
	var got []window.Result
	for _, res := range results {
		if res.Group["device"] == "d99" && !res.WindowStart.Before(t0.Add(back)) {
			got = append(got, res)
		}
	}
	if !reflect.DeepEqual(scores(got), scores(fresh)) {
		t.Errorf("returning device: %s\nwant a fresh history's %s", summary(got), summary(fresh))
	}
	// d00, reporting throughout, scores as if it had been alone.
	alone := run(t, q, slices.DeleteFunc(slices.Clone(events), func(ev window.Event) bool { return ev.Device != "d00" }), -1)
	if d00 := slices.DeleteFunc(slices.Clone(results), func(r window.Result) bool { return r.Group["device"] != "d00" }); !reflect.DeepEqual(scores(d00), scores(alone)) {
		t.Errorf("device d00 scores differ from its own run")
	}
	// Restoring anywhere, also across the expiry, gives the same results.
	for _, at := range []int{6000, half - 1, half + 1} {
		if again := run(t, q, events, at); !reflect.DeepEqual(scores(again), scores(results)) {
			t.Fatalf("snapshot at event %d changes the results", at)
		}
	}
}
