package window_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streams/window"
	"regexp"
)

// step is one call on the engine: Process(ev), Advance(at(advance)) or
// Flush, and what it must return.
type step struct {
	ev      window.Event
	advance string
	flush   bool
	disp    window.Disposition // for Process
	want    []string           // results of this call, formatted
}

func flush(want ...string) step { return step{flush: true, want: want} }

func advance(now string, want ...string) step { return step{advance: now, want: want} }

func in(e window.Event, want ...string) step { return step{ev: e, want: want} }

func late(e window.Event) step { return step{ev: e, disp: window.Late} }

func withRecv(e window.Event, recv string) window.Event {
	e.Received = at(recv)
	return e
}

type engineCase struct {
	name  string
	query string
	opts  window.Options
	steps []step
	stats *window.Stats // checked at the end when set (counters only)
}

func runCases(t *testing.T, cases []engineCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := engine(t, c.query, c.opts)
			for i, s := range c.steps {
				var got []window.Result
				switch {
				case s.flush:
					got = e.Flush()
				case s.advance != "":
					got = e.Advance(at(s.advance))
				default:
					var d window.Disposition
					got, d = e.Process(s.ev)
					eq(t, fmt.Sprintf("step %d (%s at %s): disposition", i, s.ev.Device, rel(s.ev.Time)), d, s.disp)
				}
				eqResults(t, fmt.Sprintf("step %d: results", i), got, s.want)
				for _, r := range got {
					if r.Rule != "r1" || r.ID == "" {
						t.Fatalf("step %d: result without rule or ID: %+v", i, r)
					}
				}
			}
			if c.stats != nil {
				st := e.Stats()
				eq(t, "accepted", st.Accepted, c.stats.Accepted)
				eq(t, "filtered", st.Filtered, c.stats.Filtered)
				eq(t, "late", st.Late, c.stats.Late)
				eq(t, "rejected", st.Rejected, c.stats.Rejected)
				eq(t, "having filtered", st.HavingFiltered, c.stats.HavingFiltered)
			}
		})
	}
}

const sumCols = "SELECT device, count(*) AS n, sum(v) AS s FROM 'devices/+/telemetry' "

func TestTumbling(t *testing.T) {
	q := sumCols + "GROUP BY device, TUMBLING(1m)"
	runCases(t, []engineCase{{
		name:  "assignment and closing in order",
		query: q,
		steps: []step{
			in(ev("a", "10s", 1)),
			in(ev("a", "20s", 2)),
			in(ev("b", "30s", 5)),
			in(ev("a", "65s", 1), "[0s,1m0s) device=a n=2 s=3", "[0s,1m0s) device=b n=1 s=5"),
			flush("[1m0s,2m0s) device=a n=1 s=1"),
		},
	}, {
		name:  "a window closes when the watermark reaches its end",
		query: q,
		steps: []step{
			in(ev("a", "59.999s", 1)),
			in(ev("b", "60s", 1), "[0s,1m0s) device=a n=1 s=1"),
			late(ev("a", "59.999s", 1)),
		},
	}, {
		name:  "out of order within the window is not late even without lateness",
		query: q,
		steps: []step{
			in(ev("a", "10s", 1)),
			in(ev("a", "50s", 2)),
			in(ev("a", "20s", 4)),
			in(ev("a", "1m", 8), "[0s,1m0s) device=a n=3 s=7"),
		},
	}, {
		name:  "out of order within lateness",
		query: q,
		opts:  window.Options{Lateness: 10 * time.Second},
		steps: []step{
			in(ev("a", "50s", 1)),
			in(ev("a", "62s", 2)),
			in(ev("a", "55s", 4)),
			in(ev("b", "69.9s", 1)),
			in(ev("a", "58s", 8)),
			in(ev("b", "70s", 1), "[0s,1m0s) device=a n=3 s=13"),
			flush("[1m0s,2m0s) device=a n=1 s=2", "[1m0s,2m0s) device=b n=2 s=2"),
		},
	}, {
		name:  "late beyond lateness is reported, counted and left out",
		query: q,
		opts:  window.Options{Lateness: 10 * time.Second},
		steps: []step{
			in(ev("a", "50s", 1)),
			in(ev("b", "75s", 1), "[0s,1m0s) device=a n=1 s=1"),
			late(ev("a", "55s", 100)),
			late(ev("c", "1s", 100)),
			flush("[1m0s,2m0s) device=b n=1 s=1"),
		},
		stats: &window.Stats{Accepted: 2, Late: 2},
	}, {
		name:  "HAVING filters results",
		query: sumCols + "GROUP BY device, TUMBLING(1m) HAVING s > 2",
		steps: []step{
			in(ev("a", "1s", 3)),
			in(ev("b", "2s", 1)),
			in(ev("c", "3s", 5)),
			flush("[0s,1m0s) device=a n=1 s=3", "[0s,1m0s) device=c n=1 s=5"),
		},
		stats: &window.Stats{Accepted: 3, HavingFiltered: 1},
	}, {
		name:  "WHERE filters events; a missing field does not match",
		query: sumCols + "WHERE v > 0 GROUP BY device, TUMBLING(1m)",
		steps: []step{
			in(ev("a", "1s", 3)),
			{ev: ev("a", "2s", -1), disp: window.Filtered},
			{ev: window.Event{Time: at("3s"), Device: "a", Fields: map[string]any{"x": 1.0}}, disp: window.Filtered},
			flush("[0s,1m0s) device=a n=1 s=3"),
		},
		stats: &window.Stats{Accepted: 1, Filtered: 2},
	}, {
		name:  "filtered events move the watermark",
		query: sumCols + "WHERE type = 'thermostat' GROUP BY device, TUMBLING(1m)",
		steps: []step{
			in(ev("a", "1s", 3)),
			{ev: window.Event{Time: at("1m"), Device: "x", Type: "lamp"}, disp: window.Filtered, want: []string{"[0s,1m0s) device=a n=1 s=3"}},
		},
	}, {
		name:  "no group keys: one group",
		query: "SELECT count(*) AS n, avg(v) AS avg, window_start() AS ws, window_end() AS we FROM 'devices/+/telemetry' GROUP BY TUMBLING(1h)",
		steps: []step{
			in(ev("a", "1s", 1)),
			in(ev("b", "10m", 2)),
			in(ev("c", "59m", 6)),
			in(ev("c", "1h", 6), "[0s,1h0m0s) avg=3 n=3 we=1h0m0s ws=0s"),
		},
	}, {
		name:  "group by tag and payload field",
		query: "SELECT tags.site, mode, count(*) AS n FROM 'devices/+/telemetry' GROUP BY tags.site, mode, TUMBLING(1m)",
		steps: []step{
			in(window.Event{Time: at("1s"), Tags: map[string]string{"site": "ber"}, Fields: map[string]any{"mode": "eco"}}),
			in(window.Event{Time: at("2s"), Tags: map[string]string{"site": "ber"}, Fields: map[string]any{"mode": "eco"}}),
			in(window.Event{Time: at("3s"), Tags: map[string]string{"site": "muc"}, Fields: map[string]any{"mode": "eco"}}),
			in(window.Event{Time: at("4s"), Fields: map[string]any{"mode": "boost"}}),
			// Sorted by group key: ["ber","eco"] < ["muc","eco"] < [null,"boost"].
			flush("[0s,1m0s) mode=eco n=2 tags.site=ber", "[0s,1m0s) mode=eco n=1 tags.site=muc", "[0s,1m0s) mode=boost n=1 tags.site=<nil>"),
		},
	}})
}

func TestTumblingEpochBounds(t *testing.T) {
	e := engine(t, sumCols+"GROUP BY device, TUMBLING(1m)", window.Options{})
	_, d := e.Process(window.Event{Time: time.Unix(-90, 0), Device: "a"})
	eq(t, "disposition", d, window.Accepted)
	res, d := e.Process(window.Event{Time: time.Unix(-30, 0), Device: "a"})
	eq(t, "disposition", d, window.Accepted)
	more, _ := e.Process(window.Event{Time: time.Unix(0, 0), Device: "a"})
	res = append(res, more...)
	eq(t, "results", len(res), 2)
	eq(t, "start 0", res[0].WindowStart, time.Unix(-120, 0).UTC())
	eq(t, "end 0", res[0].WindowEnd, time.Unix(-60, 0).UTC())
	eq(t, "start 1", res[1].WindowStart, time.Unix(-60, 0).UTC())
	eq(t, "end 1", res[1].WindowEnd, time.Unix(0, 0).UTC())
	eq(t, "time 1", res[1].Time, time.Unix(0, 0).UTC().Add(-time.Nanosecond))
}

func TestHopping(t *testing.T) {
	q := sumCols + "GROUP BY device, HOPPING(1m, 30s)"
	runCases(t, []engineCase{{
		name:  "an event is in every overlapping window",
		query: q,
		steps: []step{
			in(ev("a", "10s", 1)),
			in(ev("a", "45s", 2), "[-30s,30s) device=a n=1 s=1"),
			in(ev("a", "2m", 4),
				"[0s,1m0s) device=a n=2 s=3",
				"[30s,1m30s) device=a n=1 s=2"),
			flush("[1m30s,2m30s) device=a n=1 s=4", "[2m0s,3m0s) device=a n=1 s=4"),
		},
	}, {
		name:  "out of order within lateness",
		query: q,
		opts:  window.Options{Lateness: 30 * time.Second},
		steps: []step{
			in(ev("a", "50s", 1)),
			in(ev("a", "80s", 2)),
			in(ev("a", "40s", 4)),
			in(ev("b", "90s", 1), "[0s,1m0s) device=a n=2 s=5"),
			flush("[30s,1m30s) device=a n=3 s=7", "[1m0s,2m0s) device=a n=1 s=2",
				"[1m0s,2m0s) device=b n=1 s=1", "[1m30s,2m30s) device=b n=1 s=1"),
		},
	}, {
		name:  "an event is late when its earliest window has closed, though a later one is open",
		query: q,
		steps: []step{
			in(ev("a", "10s", 1)),
			in(ev("b", "60s", 1), "[-30s,30s) device=a n=1 s=1", "[0s,1m0s) device=a n=1 s=1"),
			late(ev("a", "40s", 5)),
			in(ev("a", "61s", 2)),
			flush("[30s,1m30s) device=a n=1 s=2", "[30s,1m30s) device=b n=1 s=1",
				"[1m0s,2m0s) device=a n=1 s=2", "[1m0s,2m0s) device=b n=1 s=1"),
		},
		stats: &window.Stats{Accepted: 3, Late: 1},
	}})
}

func TestSliding(t *testing.T) {
	q := sumCols + "GROUP BY device, SLIDING(30s)"
	runCases(t, []engineCase{{
		name:  "one result per event over the trailing size",
		query: q,
		steps: []step{
			in(ev("a", "10s", 1)),
			in(ev("a", "20s", 2), "[-20s,10s) device=a n=1 s=1"),
			in(ev("a", "50s", 4), "[-10s,20s) device=a n=2 s=3"),
			flush("[20s,50s) device=a n=1 s=4"),
		},
	}, {
		name:  "groups slide independently",
		query: q,
		steps: []step{
			in(ev("a", "10s", 1)),
			in(ev("b", "15s", 2), "[-20s,10s) device=a n=1 s=1"),
			in(ev("a", "25s", 4), "[-15s,15s) device=b n=1 s=2"),
			flush("[-5s,25s) device=a n=2 s=5"),
		},
	}, {
		name:  "out of order within lateness joins earlier and later windows",
		query: q,
		opts:  window.Options{Lateness: 10 * time.Second},
		steps: []step{
			in(ev("a", "10s", 1)),
			in(ev("a", "20s", 2)),
			in(ev("a", "15s", 4)),
			in(ev("a", "31s", 8),
				"[-20s,10s) device=a n=1 s=1",
				"[-15s,15s) device=a n=2 s=5",
				"[-10s,20s) device=a n=3 s=7"),
			flush("[1s,31s) device=a n=4 s=15"),
		},
	}, {
		name:  "late",
		query: q,
		steps: []step{
			in(ev("a", "10s", 1)),
			in(ev("a", "20s", 2), "[-20s,10s) device=a n=1 s=1"),
			late(ev("a", "15s", 4)),
			flush("[-10s,20s) device=a n=2 s=3"),
		},
	}, {
		name:  "events at the same time: one result each, same window",
		query: q,
		steps: []step{
			in(ev("a", "10s", 1)),
			in(ev("a", "10s", 2)),
			in(ev("a", "20s", 4), "[-20s,10s) device=a n=2 s=3", "[-20s,10s) device=a n=2 s=3"),
			flush("[-10s,20s) device=a n=3 s=7"),
		},
	}})
}

func TestSlidingTieIDsDiffer(t *testing.T) {
	e := engine(t, sumCols+"GROUP BY device, SLIDING(30s)", window.Options{})
	e.Process(ev("a", "10s", 1))
	e.Process(ev("a", "10s", 2))
	res := e.Flush()
	eq(t, "results", len(res), 2)
	if res[0].ID == res[1].ID {
		t.Fatalf("equal IDs %s", res[0].ID)
	}
}

func TestSession(t *testing.T) {
	q := sumCols + "GROUP BY device, SESSION(30s)"
	runCases(t, []engineCase{{
		name:  "a gap of at least the session gap ends a session",
		query: q,
		steps: []step{
			in(ev("a", "0s", 1)),
			in(ev("a", "10s", 2)),
			in(ev("b", "35s", 5)),
			in(ev("a", "40s", 4), "[0s,40s) device=a n=2 s=3"),
			flush("[35s,1m5s) device=b n=1 s=5", "[40s,1m10s) device=a n=1 s=4"),
		},
	}, {
		name:  "an out-of-order event bridging two sessions merges them",
		query: q,
		opts:  window.Options{Lateness: time.Minute},
		steps: []step{
			in(ev("a", "0s", 1)),
			in(ev("a", "50s", 2)),
			in(ev("a", "25s", 4)),
			flush("[0s,1m20s) device=a n=3 s=7"),
		},
	}, {
		name:  "an earlier event extends a session backwards",
		query: q,
		opts:  window.Options{Lateness: time.Minute},
		steps: []step{
			in(ev("a", "50s", 1)),
			in(ev("a", "30s", 2)),
			in(ev("a", "10s", 4)),
			in(ev("a", "2m", 8)),
			flush("[10s,1m20s) device=a n=3 s=7", "[2m0s,2m30s) device=a n=1 s=8"),
		},
	}, {
		name:  "three sessions, the middle event merges all",
		query: q,
		opts:  window.Options{Lateness: time.Minute},
		steps: []step{
			in(ev("a", "0s", 1)),
			in(ev("a", "40s", 2)),
			in(ev("a", "80s", 4)),
			in(ev("a", "20s", 8)),
			in(ev("a", "60s", 16)),
			flush("[0s,1m50s) device=a n=5 s=31"),
		},
	}, {
		name:  "late: into a closed session, or a new session that would close at once",
		query: q,
		steps: []step{
			in(ev("a", "0s", 1)),
			in(ev("b", "100s", 1), "[0s,30s) device=a n=1 s=1"),
			late(ev("a", "20s", 2)),
			late(ev("a", "70s", 2)),
			in(ev("a", "71s", 4)),
			flush("[1m11s,1m41s) device=a n=1 s=4", "[1m40s,2m10s) device=b n=1 s=1"),
		},
		stats: &window.Stats{Accepted: 3, Late: 2},
	}})
}

func TestCountWindow(t *testing.T) {
	q := sumCols + "GROUP BY device, COUNTWINDOW(3)"
	runCases(t, []engineCase{{
		name:  "every n events of a group, in input order",
		query: q,
		steps: []step{
			in(ev("a", "0s", 1)),
			in(ev("a", "10s", 2)),
			in(ev("b", "5s", 5)),
			in(ev("a", "20s", 4), "[0s,20s) device=a n=3 s=7"),
			in(ev("a", "15s", 8)),
			in(ev("a", "5s", 16)),
			in(ev("a", "1s", 32), "[1s,15s) device=a n=3 s=56"),
			flush(), // partial windows are not emitted
		},
	}, {
		name:  "never late",
		query: q,
		steps: []step{
			in(ev("a", "1h", 1)),
			in(ev("a", "0s", 2)),
			in(ev("a", "30m", 4), "[0s,1h0m0s) device=a n=3 s=7"),
		},
	}})
}

func TestCountWindowIDsAreOrdinal(t *testing.T) {
	e := engine(t, sumCols+"GROUP BY device, COUNTWINDOW(1)", window.Options{})
	a, _ := e.Process(ev("a", "0s", 1))
	b, _ := e.Process(ev("a", "0s", 1))
	eq(t, "results", len(a)+len(b), 2)
	if !regexp.MustCompile(`^r1/1709294400000000000-1709294400000000000/[0-9a-f]{24}/0$`).MatchString(a[0].ID) {
		t.Fatalf("ID %s", a[0].ID)
	}
	eq(t, "second ID", b[0].ID, a[0].ID[:len(a[0].ID)-1]+"1")
}

func TestIdleClose(t *testing.T) {
	q := sumCols + "GROUP BY device, TUMBLING(1m)"
	opts := window.Options{IdleTimeout: 30 * time.Second}
	runCases(t, []engineCase{{
		name:  "live: Advance closes the last window of a quiet input",
		query: q,
		opts:  opts,
		steps: []step{
			in(withRecv(ev("a", "10s", 1), "10s")),
			advance("39s"), // quiet for 29s: not idle yet
			advance("50s"), // idle: watermark 10s+40s = 50s
			advance("70s", "[0s,1m0s) device=a n=1 s=1"),
			{ev: withRecv(ev("a", "40s", 2), "71s"), disp: window.Late},
		},
	}, {
		name:  "replay: the gap in receive times closes the same window",
		query: q,
		opts:  opts,
		steps: []step{
			in(withRecv(ev("a", "10s", 1), "10s")),
			{ev: withRecv(ev("a", "40s", 2), "71s"), disp: window.Late, want: []string{"[0s,1m0s) device=a n=1 s=1"}},
		},
	}, {
		name:  "no receive times: the Advance before an event marks its arrival",
		query: q,
		opts:  opts,
		steps: []step{
			advance("5s"),
			in(ev("a", "10s", 1)),
			advance("20s"),
			advance("34s"), // 29s since the Advance before the event
			advance("1m5s", "[0s,1m0s) device=a n=1 s=1"),
		},
	}, {
		name:  "idle closing is off by default",
		query: q,
		steps: []step{
			in(withRecv(ev("a", "10s", 1), "10s")),
			advance("1h"),
			in(withRecv(ev("a", "20s", 1), "1h")),
			flush("[0s,1m0s) device=a n=2 s=2"),
		},
	}, {
		name:  "sessions close when idle",
		query: sumCols + "GROUP BY device, SESSION(10s)",
		opts:  window.Options{IdleTimeout: 5 * time.Second},
		steps: []step{
			in(withRecv(ev("a", "0s", 1), "0s")),
			in(withRecv(ev("a", "5s", 1), "5s")),
			advance("14s"),
			advance("15s", "[0s,15s) device=a n=2 s=2"),
		},
	}})
}

func TestRejected(t *testing.T) {
	q := sumCols + "GROUP BY device, TUMBLING(1m)"
	runCases(t, []engineCase{{
		name:  "event time too far after receive time",
		query: q,
		opts:  window.Options{MaxFuture: time.Minute},
		steps: []step{
			in(withRecv(ev("a", "10s", 1), "10s")),
			{ev: withRecv(ev("a", "1h", 1), "11s"), disp: window.Rejected},
			in(withRecv(ev("a", "71s", 1), "11s"), "[0s,1m0s) device=a n=1 s=1"), // exactly MaxFuture ahead
			flush("[1m0s,2m0s) device=a n=1 s=1"),
		},
		stats: &window.Stats{Accepted: 2, Rejected: 1},
	}, {
		name:  "no event time",
		query: q,
		steps: []step{
			{ev: window.Event{Device: "a"}, disp: window.Rejected},
			{ev: window.Event{Time: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), Device: "a"}, disp: window.Rejected},
			flush(),
		},
		stats: &window.Stats{Rejected: 2},
	}})
}

func TestResultFields(t *testing.T) {
	e := engine(t, "SELECT device, tags.site, avg(temperature) AS avg_t FROM 'devices/+/telemetry' GROUP BY device, tags.site, TUMBLING(1m)", window.Options{})
	e.Process(window.Event{Time: at("1s"), Device: "th-1", Tags: map[string]string{"site": "berlin"}, Fields: map[string]any{"temperature": 21.0}})
	res := e.Flush()
	eq(t, "results", len(res), 1)
	r := res[0]
	eq(t, "rule", r.Rule, "r1")
	eq(t, "group key", r.GroupKey, `["th-1","berlin"]`)
	eq(t, "group", r.Group, map[string]any{"device": "th-1", "tags.site": "berlin"})
	eq(t, "values", r.Values, map[string]any{"device": "th-1", "tags.site": "berlin", "avg_t": 21.0})
	eq(t, "start", r.WindowStart, at("0s"))
	eq(t, "end", r.WindowEnd, at("1m"))
	eq(t, "time", r.Time, at("1m").Add(-time.Nanosecond))
	if !regexp.MustCompile(`^r1/1709294400000000000-1709294460000000000/[0-9a-f]{24}$`).MatchString(r.ID) {
		t.Fatalf("ID %s", r.ID)
	}

	// The ID is a function of rule, group and window only.
	e2 := engine(t, "SELECT device, tags.site, avg(temperature) AS avg_t FROM 'devices/+/telemetry' GROUP BY device, tags.site, TUMBLING(1m)", window.Options{Lateness: time.Second})
	e2.Process(window.Event{Time: at("59s"), Device: "th-1", Tags: map[string]string{"site": "berlin"}, Fields: map[string]any{"temperature": 5.0}})
	eq(t, "ID", e2.Flush()[0].ID, r.ID)
}

func TestStats(t *testing.T) {
	e := engine(t, sumCols+"WHERE v >= 0 GROUP BY device, TUMBLING(1m)", window.Options{})
	e.Process(window.Event{Time: at("1s"), Device: "a", Fields: map[string]any{"v": 1.0}, Seq: 7})
	e.Process(window.Event{Time: at("2s"), Device: "b", Fields: map[string]any{"v": 1.0}, Seq: 8})
	e.Process(window.Event{Time: at("61s"), Device: "b", Fields: map[string]any{"v": 1.0}, Seq: 9})
	e.Process(window.Event{Time: at("62s"), Device: "b", Fields: map[string]any{"v": -1.0}, Seq: 10})
	e.Process(window.Event{Time: at("3s"), Device: "b", Fields: map[string]any{"v": 1.0}, Seq: 11})
	eq(t, "stats", e.Stats(), window.Stats{
		EventsIn: 5, Accepted: 3, Filtered: 1, Late: 1, Results: 2,
		OpenWindows: 1, Groups: 1, Watermark: at("62s"), LastSeq: 11,
	})
}
