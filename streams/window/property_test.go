package window_test

import (
	"math"
	"math/rand"
	"testing"
	"testing/quick"
	"time"

	"github.com/tributary-iot/tributary/streams/window"
)

// More property tests (see prop_test.go for order independence, replay = live and one
// snapshot split): counts are conserved, TUMBLING agrees with a brute-force oracle, and any
// number of snapshot/restore hand-overs equal one uninterrupted run.

// propCount is the number of cases per property; quick's default of 100 finds too little.
const propCount = 300

// conserveQuery counts events per device and window; the WHERE filters some out.
const conserveQuery = "SELECT device, count(*) AS n, sum(v) AS s, min(v) AS lo, max(v) AS hi " +
	"FROM 'devices/+/telemetry' WHERE v > -90 GROUP BY device, "

// liveRun feeds s's events with its Advance calls and flushes at the end. It returns the
// results and each event's disposition.
func liveRun(t testing.TB, s liveScenario, query string) ([]window.Result, []window.Disposition, window.Stats) {
	e := engine(t, query, window.Options{Lateness: s.Lateness, IdleTimeout: s.Idle})
	calls := s.run(e, true, 0, len(s.Events))
	res := append(results(calls), e.Flush()...)
	return res, processed(calls), e.Stats()
}

// Every event is accepted, filtered, late or rejected, the stats agree, and each accepted
// event is counted by exactly as many windows as cover it: one for TUMBLING and SESSION,
// size/hop for HOPPING, and for COUNTWINDOW(4) one unless it is in a group's final partial
// window, which is never emitted.
func TestPropCountsConserved(t *testing.T) {
	t.Parallel()
	shapes := []struct {
		window string
		per    uint64 // windows per accepted event
		count  int    // COUNTWINDOW size, 0 otherwise
	}{{"TUMBLING(1m)", 1, 0}, {"SESSION(20s)", 1, 0}, {"HOPPING(1m, 20s)", 3, 0}, {"COUNTWINDOW(4)", 1, 4}}
	r := rand.New(rand.NewSource(11))
	prop := func(s liveScenario) bool {
		sh := shapes[r.Intn(len(shapes))]
		s.Window = sh.window
		res, disp, st := liveRun(t, s, conserveQuery+sh.window)
		var byDisp [4]uint64
		accepted := map[string]uint64{} // device → accepted events
		for i, d := range disp {
			byDisp[d]++
			if d == window.Accepted {
				accepted[s.Events[i].Device]++
			}
		}
		if got := byDisp[0] + byDisp[1] + byDisp[2] + byDisp[3]; got != uint64(len(s.Events)) || st.EventsIn != got {
			t.Logf("%d dispositions, %d events in stats, %d events\n%s", got, st.EventsIn, len(s.Events), s)
			return false
		}
		if st.Accepted != byDisp[window.Accepted] || st.Filtered != byDisp[window.Filtered] || st.Late != byDisp[window.Late] || st.Rejected != byDisp[window.Rejected] {
			t.Logf("stats %+v, dispositions %v\n%s", st, byDisp, s)
			return false
		}
		if st.Results != uint64(len(res)) {
			t.Logf("stats say %d results, got %d\n%s", st.Results, len(res), s)
			return false
		}
		counted := map[string]uint64{}
		for _, r := range res {
			n, ok := r.Values["n"].(float64)
			if !ok || n < 1 {
				t.Logf("result %s has count %v", format(r), r.Values["n"])
				return false
			}
			counted[r.Group["device"].(string)] += uint64(n)
		}
		for _, dev := range []string{"a", "b", "c"} {
			want := accepted[dev] * sh.per
			if sh.count > 0 {
				want -= accepted[dev] % uint64(sh.count)
			}
			if counted[dev] != want {
				t.Logf("%s: device %s: windows count %d events, want %d (%d accepted)\n%s\n%v", sh.window, dev, counted[dev], want, accepted[dev], s, formatAll(res))
				return false
			}
		}
		return true
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: propCount, Rand: rand.New(rand.NewSource(12))}); err != nil {
		t.Fatal(err)
	}
}

// TUMBLING(1m) results equal a brute-force aggregation of the accepted events by device and
// minute, and no window is missing or extra.
func TestPropTumblingMatchesOracle(t *testing.T) {
	t.Parallel()
	type key struct {
		dev   string
		start int64
	}
	type agg struct {
		n, s, lo, hi float64
	}
	prop := func(s liveScenario) bool {
		s.Window = "TUMBLING(1m)"
		res, disp, _ := liveRun(t, s, conserveQuery+s.Window)
		want := map[key]*agg{}
		for i, d := range disp {
			if d != window.Accepted {
				continue
			}
			ev := s.Events[i]
			v := ev.Fields["v"].(float64)
			k := key{ev.Device, ev.Time.Truncate(time.Minute).UnixNano()}
			a := want[k]
			if a == nil {
				a = &agg{lo: math.Inf(1), hi: math.Inf(-1)}
				want[k] = a
			}
			a.n++
			a.s += v
			a.lo, a.hi = math.Min(a.lo, v), math.Max(a.hi, v)
		}
		if len(res) != len(want) {
			t.Logf("%d results, oracle has %d windows\n%s\n%v", len(res), len(want), s, formatAll(res))
			return false
		}
		for _, r := range res {
			k := key{r.Group["device"].(string), r.WindowStart.UnixNano()}
			a := want[k]
			if a == nil || r.WindowEnd.Sub(r.WindowStart) != time.Minute {
				t.Logf("result %s: no such window in the oracle\n%s", format(r), s)
				return false
			}
			got := agg{r.Values["n"].(float64), r.Values["s"].(float64), r.Values["lo"].(float64), r.Values["hi"].(float64)}
			if got.n != a.n || !closeEnough(got.s, a.s) || got.lo != a.lo || got.hi != a.hi {
				t.Logf("result %s: want n=%v s=%v lo=%v hi=%v\n%s", format(r), a.n, a.s, a.lo, a.hi, s)
				return false
			}
		}
		return true
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: propCount, Rand: rand.New(rand.NewSource(13))}); err != nil {
		t.Fatal(err)
	}
}

// Handing the rule over several times — snapshot, restore into a fresh engine, continue — at
// random points gives the same calls, results and final state as one engine seeing it all:
// what happens when the rule's owner changes again and again.
func TestPropManyHandovers(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewSource(14))
	prop := func(s liveScenario) bool {
		one := s.engine(t)
		want := s.run(one, true, 0, len(s.Events))
		want = append(want, call{results: one.Flush()})

		e := s.engine(t)
		var got []call
		from := 0
		for from < len(s.Events) {
			to := from + 1 + r.Intn(len(s.Events)-from)
			got = append(got, s.run(e, true, from, to)...)
			snap, err := e.Snapshot()
			if err != nil {
				t.Logf("snapshot after %d: %v", to, err)
				return false
			}
			next := s.engine(t)
			if err := next.Restore(snap); err != nil {
				t.Logf("restore after %d: %v", to, err)
				return false
			}
			// Seqs rise with the input: the restored engine knows where to resume.
			if st := next.Stats(); st.LastSeq != s.Events[to-1].Seq {
				t.Logf("restored LastSeq %d, last event fed %d", st.LastSeq, s.Events[to-1].Seq)
				return false
			}
			e, from = next, to
		}
		got = append(got, call{results: e.Flush()})
		if err := sameResults(results(got), results(want)); err != nil {
			t.Logf("%v\n%s", err, s)
			return false
		}
		dg, dw := processed(got), processed(want)
		if len(dg) != len(dw) {
			t.Logf("%d dispositions, want %d", len(dg), len(dw))
			return false
		}
		for i := range dg {
			if dg[i] != dw[i] {
				t.Logf("event %d: %s after hand-overs, %s in one run\n%s", i, dg[i], dw[i], s)
				return false
			}
		}
		return true
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: propCount, Rand: rand.New(rand.NewSource(15))}); err != nil {
		t.Fatal(err)
	}
}
