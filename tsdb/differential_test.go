package tsdb_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/streamstest"
	"github.com/tributary-iot/tributary/tsdb"
	"github.com/tributary-iot/tributary/tsdb/influxtest"
)

// model is the test's own account of what should be stored: field → time → value.
type model map[string]map[time.Time]any

func (m model) put(at time.Time, fields map[string]any) {
	for f, v := range fields {
		f = tsdb.StoredField(f)
		if m[f] == nil {
			m[f] = map[time.Time]any{}
		}
		if n, ok := v.(int); ok {
			v = float64(n)
		}
		m[f][at] = v
	}
}

// dataset publishes the differential test's data for dev-a (and some for dev-b) and returns
// what dev-a should have stored, and the number of messages published.
func dataset(t *testing.T, bus *streams.Bus) (model, int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	want := model{}
	var envs []*streams.Envelope
	add := func(dev string, at time.Time, fields map[string]any, stored bool) {
		envs = append(envs, telemetry(dev, at, fields))
		if stored && dev == "dev-a" {
			want.put(at, fields)
		}
	}
	for i := range 600 {
		at := base.Add(time.Duration(i)*17*time.Second + time.Duration(rng.IntN(1000))*time.Millisecond)
		fields := map[string]any{"temp": math.Round(rng.NormFloat64()*500)/100 + 20}
		if i%5 == 0 {
			fields["door"] = rng.IntN(2) == 0
		}
		if i%7 == 0 {
			fields["state"] = fmt.Sprintf("s%d", rng.IntN(4))
		}
		if i%50 == 0 {
			fields["count"] = i // an integer: stored as a float
			fields["time"] = "t" + fmt.Sprint(i)
		}
		add("dev-a", at, fields, true)
		add("dev-b", at, map[string]any{"temp": 1000.0}, false)
	}
	// Publish order is not time order.
	rng.Shuffle(len(envs), func(i, j int) { envs[i], envs[j] = envs[j], envs[i] })
	// Points at window and range edges.
	add("dev-a", base.Add(10*time.Minute), map[string]any{"temp": 7.25}, true)
	add("dev-a", base.Add(time.Hour), map[string]any{"temp": 8.5}, true)
	// A later message at the same time overwrites.
	add("dev-a", base.Add(20*time.Minute), map[string]any{"temp": 1.0}, true)
	add("dev-a", base.Add(20*time.Minute), map[string]any{"temp": 2.0}, true)
	// A type conflict: refused whole, neighbours stored.
	add("dev-a", base.Add(30*time.Minute+time.Second), map[string]any{"temp": "n/a", "hum": 50.0}, false)
	add("dev-a", base.Add(30*time.Minute+2*time.Second), map[string]any{"temp": 3.0}, true)
	publish(t, bus, envs...)
	// A SenML pack with two instants.
	senml := &streams.Envelope{DeviceID: "dev-a", Topic: "devices/dev-a/telemetry", ContentType: "application/senml+json",
		EventTime: base.Add(45 * time.Minute), Payload: []byte(`[{"bt":1704069900,"n":"temp","v":11.5},{"n":"temp","t":2.5,"v":12.5}]`)}
	senml.Stamp(time.Now())
	publish(t, bus, senml)
	want.put(base.Add(45*time.Minute), map[string]any{"temp": 11.5})
	want.put(base.Add(45*time.Minute+2500*time.Millisecond), map[string]any{"temp": 12.5})
	return want, len(envs) + 1
}

// expect computes q's answer from the model with a plain loop over windows.
func (m model) expect(q tsdb.Query) ([]tsdb.Point, error) {
	type tv struct {
		t time.Time
		v any
	}
	var vals []tv
	for at, v := range m[tsdb.StoredField(q.Field)] {
		if !at.Before(q.From) && at.Before(q.To) {
			vals = append(vals, tv{at, v})
		}
	}
	sort.Slice(vals, func(i, j int) bool { return vals[i].t.Before(vals[j].t) })
	agg := q.Agg
	if agg == "" && q.Every > 0 {
		agg = "mean"
	}
	reduce := func(vs []tv) (any, error) {
		if agg == "count" {
			return int64(len(vs)), nil
		}
		if agg == "first" {
			return vs[0].v, nil
		}
		if agg == "last" {
			return vs[len(vs)-1].v, nil
		}
		var sum float64
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, x := range vs {
			f, ok := x.v.(float64)
			if !ok {
				return nil, tsdb.ErrFieldType
			}
			sum += f
			lo, hi = math.Min(lo, f), math.Max(hi, f)
		}
		return map[string]float64{"mean": sum / float64(len(vs)), "sum": sum, "min": lo, "max": hi}[agg], nil
	}
	var out []tsdb.Point
	switch {
	case agg == "":
		for _, x := range vals {
			out = append(out, tsdb.Point{Time: x.t, Value: x.v})
		}
	case q.Every == 0:
		if len(vals) > 0 {
			v, err := reduce(vals)
			if err != nil {
				return nil, err
			}
			out = append(out, tsdb.Point{Time: q.From, Value: v})
		}
	default:
		e := int64(q.Every)
		first := q.From.UnixNano() / e * e
		if q.From.UnixNano() < 0 && q.From.UnixNano()%e != 0 {
			first -= e
		}
		for ws := first; ws < q.To.UnixNano(); ws += e {
			var in []tv
			for _, x := range vals {
				if n := x.t.UnixNano(); n >= ws && n < ws+e {
					in = append(in, x)
				}
			}
			if len(in) == 0 {
				continue
			}
			v, err := reduce(in)
			if err != nil {
				return nil, err
			}
			out = append(out, tsdb.Point{Time: time.Unix(0, ws).UTC(), Value: v})
		}
	}
	return out, nil
}

func samePoints(a, b []tsdb.Point) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d points, want %d", len(a), len(b))
	}
	for i := range a {
		if !a[i].Time.Equal(b[i].Time) {
			return fmt.Errorf("point %d at %s, want %s", i, a[i].Time.Format(time.RFC3339Nano), b[i].Time.Format(time.RFC3339Nano))
		}
		if !sameValue(a[i].Value, b[i].Value) {
			return fmt.Errorf("point %d at %s: %v (%T), want %v (%T)", i, a[i].Time.Format(time.RFC3339Nano), a[i].Value, a[i].Value, b[i].Value, b[i].Value)
		}
	}
	return nil
}

func sameValue(a, b any) bool {
	fa, oka := a.(float64)
	fb, okb := b.(float64)
	if oka && okb {
		return math.Abs(fa-fb) <= 1e-9*math.Max(1, math.Abs(fb))
	}
	return reflect.DeepEqual(a, b)
}

// TestQueriersAgree stores the same data through the writer in a real InfluxDB and runs the
// same queries against InfluxDB (Flux), the stream, and the test's own computation.
func TestQueriersAgree(t *testing.T) {
	t.Parallel()
	bus := streamstest.New(t)
	db := influxtest.Shared(t).NewDB(t)
	cfg := testConfig(db)
	want, n := dataset(t, bus)
	w := newWriter(t, bus, cfg, tsdb.TelemetryMapping(nil, ""))
	startWriter(t, w)
	eventually(t, 60*time.Second, func() bool {
		st := w.Status()
		return st.Written+st.DeadLettered == uint64(n)
	}, "writer handled %+v, want %d messages", w.Status(), n)
	if st := w.Status(); st.DeadLettered != 1 {
		t.Fatalf("got %d dead letters, want 1 (the type conflict)", st.DeadLettered)
	}

	log := streamstest.Logger(t)
	influx, err := tsdb.NewInfluxQuerier(cfg, log)
	if err != nil {
		t.Fatalf("NewInfluxQuerier: %v", err)
	}
	defer influx.Close()
	backends := map[string]tsdb.Querier{
		"influx": influx,
		"stream": tsdb.NewStreamQuerier(bus, tsdb.StreamConfig{}, log),
	}

	from, to := base, base.Add(3*time.Hour)
	q := func(field string, from, to time.Time, every time.Duration, agg string) tsdb.Query {
		return tsdb.Query{Device: "dev-a", Field: field, From: from, To: to, Every: every, Agg: agg}
	}
	queries := []tsdb.Query{
		q("temp", from, to, 0, ""),
		q("temp", base.Add(10*time.Minute), base.Add(time.Hour), 0, ""), // a point on each edge
		q("temp", from, to, time.Hour, "mean"),
		q("temp", base.Add(7*time.Minute+13*time.Second), base.Add(2*time.Hour+time.Second), 10*time.Minute, ""), // default mean, cut windows
		q("temp", from, to, 17*time.Second, "count"),
		q("temp", from, to, 0, "mean"),
		q("temp", base.Add(time.Minute), base.Add(50*time.Minute), 0, "sum"),
		q("door", from, to, 0, ""),
		q("door", from, to, 30*time.Minute, "count"),
		q("state", from, to, time.Hour, "last"),
		q("state", from, to, 0, "first"),
		q("count", from, to, 0, ""),
		q("time", from, to, 0, ""),                                                    // stored as time_
		q("temp", base.Add(-time.Hour), base.Add(-time.Minute), 0, ""),                // empty
		q("temp", base.Add(-time.Hour), base.Add(-time.Minute), time.Minute, "count"), // empty
		q("nosuch", from, to, time.Minute, "mean"),
	}
	for _, agg := range tsdb.Aggs {
		queries = append(queries,
			q("temp", base.Add(7*time.Minute+13*time.Second), base.Add(2*time.Hour+time.Second), 10*time.Minute, agg),
			q("temp", from, to, 0, agg))
	}
	ctx := context.Background()
	for _, qq := range queries {
		name := fmt.Sprintf("%s/%s..%s/every=%s/agg=%s", qq.Field, qq.From.Sub(base), qq.To.Sub(base), qq.Every, qq.Agg)
		exp, err := want.expect(qq)
		if err != nil {
			t.Fatalf("%s: model: %v", name, err)
		}
		for bname, b := range backends {
			got, err := b.Query(ctx, qq)
			if err != nil {
				t.Errorf("%s: %s: %v", name, bname, err)
				continue
			}
			if err := samePoints(got, exp); err != nil {
				t.Errorf("%s: %s: %v", name, bname, err)
			}
		}
	}
	if len(want["temp"]) < 600 {
		t.Fatalf("model holds %d temps, want at least 600", len(want["temp"]))
	}

	// Numeric aggregates of booleans and strings fail alike, naming the field.
	for _, field := range []string{"door", "state"} {
		for bname, b := range backends {
			_, err := b.Query(ctx, q(field, from, to, time.Hour, "mean"))
			if !errors.Is(err, tsdb.ErrFieldType) || !containsQuoted(err, field) {
				t.Errorf("mean of %s: %s: got %v, want ErrFieldType naming the field", field, bname, err)
			}
		}
	}

	// Latest: the newest value of each field.
	wantLatest := map[string]tsdb.Point{}
	for f, vals := range want {
		for at, v := range vals {
			if p, ok := wantLatest[f]; !ok || at.After(p.Time) {
				wantLatest[f] = tsdb.Point{Time: at, Value: v}
			}
		}
	}
	for bname, b := range backends {
		got, err := b.Latest(ctx, "dev-a")
		if err != nil {
			t.Fatalf("latest: %s: %v", bname, err)
		}
		if len(got) != len(wantLatest) {
			t.Errorf("latest: %s: got fields %v, want %v", bname, keys(got), keys(wantLatest))
		}
		for f, p := range wantLatest {
			if g, ok := got[f]; !ok || !g.Time.Equal(p.Time) || !sameValue(g.Value, p.Value) {
				t.Errorf("latest: %s: field %s: got %+v, want %+v", bname, f, g, p)
			}
		}
		if none, err := b.Latest(ctx, "nobody"); err != nil || len(none) != 0 {
			t.Errorf("latest of an unknown device: %s: got %v, %v, want nothing", bname, none, err)
		}
	}
}

func containsQuoted(err error, s string) bool {
	return err != nil && strings.Contains(err.Error(), fmt.Sprintf("%q", s))
}

func keys(m map[string]tsdb.Point) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
