package window_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/quick"
	"time"

	"github.com/tributary-iot/tributary/streams/window"
)

// Property tests over random inputs, with testing/quick. Each generates a
// scenario: a window, options and events; quick shrinks nothing but prints
// the failing scenario.

const allAggs = "SELECT device, count(*) AS n, count(v) AS nv, sum(v) AS s, avg(v) AS a, min(v) AS lo, max(v) AS hi, " +
	"first(v) AS f, last(v) AS l, stddev(v) AS sd, percentile(v, 90) AS p90, window_start() AS ws, window_end() AS we " +
	"FROM 'devices/+/telemetry' WHERE v IS NULL OR v > -90 GROUP BY device, "

var windows = []string{"TUMBLING(1m)", "HOPPING(1m, 20s)", "SLIDING(45s)", "SESSION(20s)", "COUNTWINDOW(4)"}

// scenario is a random input for one rule.
type scenario struct {
	Window   string
	Lateness time.Duration
	Idle     time.Duration
	Events   []window.Event // in input order
	// Advances[i] > 0: call Advance(Events[i].Received - Advances[i]) before
	// Events[i] (live runs only).
	Advances []time.Duration
}

func (s scenario) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "window %s lateness %s idle %s, %d events:\n", s.Window, s.Lateness, s.Idle, len(s.Events))
	for i, e := range s.Events {
		fmt.Fprintf(&b, "  %d: %s t=%s recv=%s seq=%d v=%v", i, e.Device, rel(e.Time), rel(e.Received), e.Seq, e.Fields["v"])
		if i < len(s.Advances) && s.Advances[i] > 0 {
			fmt.Fprintf(&b, " (advance to recv-%s first)", s.Advances[i])
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// GoString keeps quick's failure messages readable.
func (s scenario) GoString() string { return s.String() }

func (s scenario) engine(t testing.TB) *window.Engine {
	return engine(t, allAggs+s.Window, window.Options{Lateness: s.Lateness, IdleTimeout: s.Idle})
}

// genSorted makes n events in event-time order, Seq in that order, values
// from a small set so that min, max, first and last see ties.
func genSorted(r *rand.Rand, n int) []window.Event {
	evs := make([]window.Event, n)
	for i := range evs {
		fields := map[string]any{"v": float64(r.Intn(200) - 100)}
		if r.Intn(10) == 0 {
			delete(fields, "v")
		}
		evs[i] = window.Event{
			Time:   base.Add(time.Duration(r.Int63n(int64(5 * time.Minute))).Truncate(time.Second / 4)),
			Device: []string{"a", "b", "c"}[r.Intn(3)],
			Fields: fields,
		}
	}
	slices.SortStableFunc(evs, func(a, b window.Event) int { return a.Time.Compare(b.Time) })
	for i := range evs {
		evs[i].Seq = uint64(i + 1)
	}
	return evs
}

// orderScenario is events in event-time order; permuted returns them in an
// arrival order within the lateness.
type orderScenario struct{ scenario }

func (orderScenario) Generate(r *rand.Rand, size int) reflect.Value {
	s := scenario{
		Window:   windows[r.Intn(len(windows)-1)], // not COUNTWINDOW: it follows input order by design
		Lateness: time.Duration(r.Intn(4)) * 15 * time.Second,
		Events:   genSorted(r, 1+r.Intn(size+1)),
	}
	return reflect.ValueOf(orderScenario{s})
}

// permuted delays each event by up to the lateness: an event then arrives
// after others only if their times are at most its time + lateness, which is
// what "within lateness" means.
func (s orderScenario) permuted(r *rand.Rand) []window.Event {
	type arrival struct {
		key time.Time
		ev  window.Event
	}
	as := make([]arrival, len(s.Events))
	for i, e := range s.Events {
		d := time.Duration(0)
		if s.Lateness > 0 {
			d = time.Duration(r.Int63n(int64(s.Lateness) + 1))
		}
		as[i] = arrival{e.Time.Add(d), e}
	}
	r.Shuffle(len(as), func(i, j int) { as[i], as[j] = as[j], as[i] })
	slices.SortStableFunc(as, func(a, b arrival) int { return a.key.Compare(b.key) })
	out := make([]window.Event, len(as))
	for i, a := range as {
		out[i] = a.ev
	}
	return out
}

func runAll(t testing.TB, e *window.Engine, evs []window.Event) (res []window.Result, late int) {
	for _, ev := range evs {
		rs, d := e.Process(ev)
		res = append(res, rs...)
		if d == window.Late {
			late++
		}
	}
	return append(res, e.Flush()...), late
}

func TestPropOrderIndependentWithinLateness(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	prop := func(s orderScenario) bool {
		want, late := runAll(t, s.engine(t), s.Events)
		if late != 0 {
			t.Logf("in-order run: %d late events\n%s", late, s)
			return false
		}
		perm := s.permuted(r)
		got, late := runAll(t, s.engine(t), perm)
		if late != 0 {
			t.Logf("permuted run: %d late events\n%s", late, s)
			return false
		}
		if err := sameResults(got, want); err != nil {
			t.Logf("%v\n%s\npermuted: %v", err, s, seqs(perm))
			return false
		}
		return true
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 500, Rand: rand.New(rand.NewSource(2))}); err != nil {
		t.Fatal(err)
	}
}

func seqs(evs []window.Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, e := range evs {
		out[i] = e.Seq
	}
	return out
}

// liveScenario has events in arrival order with receive times, some out of
// order and some late, and Advance calls between them.
type liveScenario struct{ scenario }

func (liveScenario) Generate(r *rand.Rand, size int) reflect.Value {
	s := scenario{
		Window:   windows[r.Intn(len(windows))],
		Lateness: time.Duration(r.Intn(3)) * 10 * time.Second,
		Idle:     time.Duration(r.Intn(3)) * 15 * time.Second,
	}
	n := 1 + r.Intn(size+1)
	recv := base
	for i := range n {
		recv = recv.Add(time.Duration(r.Int63n(int64(40 * time.Second))))
		// Event time: usually just before receipt, sometimes much older.
		delay := time.Duration(r.Int63n(int64(3 * time.Second)))
		if r.Intn(5) == 0 {
			delay = time.Duration(r.Int63n(int64(2 * time.Minute)))
		}
		s.Events = append(s.Events, window.Event{
			Time:     recv.Add(-delay),
			Received: recv,
			Device:   []string{"a", "b", "c"}[r.Intn(3)],
			Fields:   map[string]any{"v": float64(r.Intn(200) - 100)},
			Seq:      uint64(i + 1),
		})
		var adv time.Duration
		if r.Intn(2) == 0 && i > 0 {
			gap := recv.Sub(s.Events[i-1].Received)
			adv = time.Duration(r.Int63n(int64(gap) + 1))
		}
		s.Advances = append(s.Advances, adv)
	}
	return reflect.ValueOf(liveScenario{s})
}

type call struct {
	results []window.Result
	disp    window.Disposition
	advance bool // an Advance call, not Process
}

// run feeds the scenario; live runs also call Advance as scheduled. It
// returns every call's output; from is where to start, and e may be a
// restored engine.
func (s liveScenario) run(e *window.Engine, live bool, from, to int) []call {
	var out []call
	for i := from; i < to; i++ {
		ev := s.Events[i]
		if live && s.Advances[i] > 0 {
			out = append(out, call{results: e.Advance(ev.Received.Add(-s.Advances[i])), advance: true})
		}
		rs, d := e.Process(ev)
		out = append(out, call{results: rs, disp: d})
	}
	return out
}

func results(calls []call) []window.Result {
	var rs []window.Result
	for _, c := range calls {
		rs = append(rs, c.results...)
	}
	return rs
}

// processed returns the dispositions of the Process calls.
func processed(calls []call) []window.Disposition {
	var ds []window.Disposition
	for _, c := range calls {
		if !c.advance {
			ds = append(ds, c.disp)
		}
	}
	return ds
}

// A replay, which has the receive times but not the Advance calls, treats
// every event as the live run did and gives the same results.
func TestPropReplayEqualsLive(t *testing.T) {
	prop := func(s liveScenario) bool {
		le, re := s.engine(t), s.engine(t)
		live := s.run(le, true, 0, len(s.Events))
		replay := s.run(re, false, 0, len(s.Events))
		dl, dr := processed(live), processed(replay)
		if !slices.Equal(dl, dr) {
			t.Logf("dispositions: live %v, replay %v\n%s", dl, dr, s)
			return false
		}
		got := append(results(live), le.Flush()...)
		want := append(results(replay), re.Flush()...)
		if err := sameResults(got, want); err != nil {
			t.Logf("%v\n%s", err, s)
			return false
		}
		return true
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 500, Rand: rand.New(rand.NewSource(3))}); err != nil {
		t.Fatal(err)
	}
}

// Snapshot mid-stream, restore into a new engine and continue: the same
// results, call by call, as an uninterrupted run, and the same final state.
func TestPropSnapshotRestore(t *testing.T) {
	r := rand.New(rand.NewSource(5))
	prop := func(s liveScenario) bool {
		k := r.Intn(len(s.Events) + 1)
		a := s.engine(t)
		want := s.run(a, true, 0, len(s.Events))
		want = append(want, call{results: a.Flush()})

		b := s.engine(t)
		got := s.run(b, true, 0, k)
		snap, err := b.Snapshot()
		if err != nil {
			t.Logf("snapshot: %v", err)
			return false
		}
		c := s.engine(t)
		if err := c.Restore(snap); err != nil {
			t.Logf("restore: %v", err)
			return false
		}
		again, _ := c.Snapshot()
		if !bytes.Equal(snap, again) {
			t.Logf("snapshot of the restored engine differs\n%s", s)
			return false
		}
		if !reflect.DeepEqual(b.Stats(), c.Stats()) {
			t.Logf("stats after restore: got %+v, want %+v", c.Stats(), b.Stats())
			return false
		}
		got = append(got, s.run(c, true, k, len(s.Events))...)
		final, _ := c.Snapshot()
		got = append(got, call{results: c.Flush()})
		if !reflect.DeepEqual(got, want) {
			t.Logf("split at %d: results differ\n%s\ngot  %v\nwant %v", k, s, formatCalls(got), formatCalls(want))
			return false
		}
		// The same state as the uninterrupted run, byte for byte.
		a2 := s.engine(t)
		s.run(a2, true, 0, len(s.Events))
		if ref, _ := a2.Snapshot(); !bytes.Equal(ref, final) {
			t.Logf("split at %d: final snapshots differ\n%s", k, s)
			return false
		}
		return true
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 500, Rand: rand.New(rand.NewSource(6))}); err != nil {
		t.Fatal(err)
	}
}

func formatCalls(cs []call) []string {
	var out []string
	for _, c := range cs {
		out = append(out, fmt.Sprintf("%s:%v", c.disp, formatAll(c.results)))
	}
	return out
}

func TestRestoreErrors(t *testing.T) {
	e := engine(t, sumCols+"GROUP BY device, TUMBLING(1m)", window.Options{})
	e.Process(ev("a", "1s", 1))
	snap, err := e.Snapshot()
	if err != nil {
		t.Fatal(err)
	}

	other := engine(t, sumCols+"GROUP BY device, TUMBLING(2m)", window.Options{})
	if err := other.Restore(snap); !errors.Is(err, window.ErrSnapshotMismatch) {
		t.Fatalf("other plan: got %v, want ErrSnapshotMismatch", err)
	}
	otherOpts := engine(t, sumCols+"GROUP BY device, TUMBLING(1m)", window.Options{Lateness: time.Second})
	if err := otherOpts.Restore(snap); !errors.Is(err, window.ErrSnapshotMismatch) {
		t.Fatalf("other options: got %v, want ErrSnapshotMismatch", err)
	}
	// Formatting differences do not change the plan.
	same := engine(t, "select device, COUNT(*) n, sum(v) as s from 'devices/+/telemetry' group by device, tumbling(60s)", window.Options{})
	if err := same.Restore(snap); err != nil {
		t.Fatalf("same plan, other spelling: %v", err)
	}

	for i := 0; i < len(snap); i++ {
		if err := same.Restore(snap[:i]); !errors.Is(err, window.ErrCorruptSnapshot) {
			t.Fatalf("truncated to %d bytes: got %v, want ErrCorruptSnapshot", i, err)
		}
		bad := slices.Clone(snap)
		bad[i] ^= 0x10
		if err := same.Restore(bad); err == nil {
			t.Fatalf("byte %d flipped: no error", i)
		}
	}
	// A failed restore leaves the engine as it was.
	eq(t, "stats", same.Stats().Accepted, uint64(1))
	eqResults(t, "flush", same.Flush(), []string{"[0s,1m0s) device=a n=1 s=1"})

	// A version 1 snapshot (before series groups recorded their last window) of a plan
	// without series functions is the same bytes with another version: it still restores;
	// versions from the future do not.
	withVersion := func(v byte) []byte {
		b := slices.Clone(snap[:len(snap)-4])
		b[4] = v
		return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
	}
	v1 := engine(t, sumCols+"GROUP BY device, TUMBLING(1m)", window.Options{})
	if err := v1.Restore(withVersion(1)); err != nil {
		t.Fatalf("version 1 snapshot: %v", err)
	}
	eqResults(t, "flush after a version 1 restore", v1.Flush(), []string{"[0s,1m0s) device=a n=1 s=1"})
	if err := v1.Restore(withVersion(9)); !errors.Is(err, window.ErrCorruptSnapshot) {
		t.Fatalf("version 9 snapshot: got %v, want ErrCorruptSnapshot", err)
	}
}
