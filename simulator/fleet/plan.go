package fleet

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// Plan is what a definition and a seed fix ahead of a run: device IDs and their parameters,
// which devices get which anomalies, and (from per-device random streams) every value, fault
// and send decision. Two runs of the same plan send the same payloads at the same offsets.
type Plan struct {
	Def     Definition
	Seed    int64
	Devices []DevicePlan
}

// DevicePlan is one virtual device.
type DevicePlan struct {
	ID      string
	Profile int // index into Def.Profiles
	Index   int // within the profile
	// Phase is when, within its first interval, the device sends first (spreads the load).
	Phase time.Duration
	// Skew is the device's clock offset.
	Skew time.Duration
	// SinePhase is the phase of each sine field, in radians.
	SinePhase map[string]float64
	// Anomalies are the windows injected into this device, in start order.
	Anomalies []Window
}

// Window is one anomaly of one device, as offsets from the start of the run.
type Window struct {
	Kind      string
	Field     string
	From, To  time.Duration
	Magnitude float64
}

func (w Window) covers(off time.Duration) bool { return off >= w.From && off < w.To }

// Random streams of a device, so that e.g. adding faults does not change values.
const (
	streamParams = iota
	streamValues
	streamSends
	streamDisconnects
	streamBursts
	streamAnomaly
)

// rng returns an independent deterministic stream for (seed, key...).
func rng(seed int64, key ...any) *rand.Rand {
	h := fnv.New64a()
	for _, k := range key {
		fmt.Fprint(h, k, "\x00")
	}
	return rand.New(rand.NewPCG(uint64(seed), h.Sum64()))
}

// NewPlan fixes the devices of def with seed.
func NewPlan(def Definition, seed int64) *Plan {
	p := &Plan{Def: def, Seed: seed}
	for pi := range def.Profiles {
		prof := &def.Profiles[pi]
		prefix := prof.idPrefix(def.Name)
		width := idDigits(prof.Devices)
		interval := prof.Rate.Interval()
		first := len(p.Devices)
		for i := range prof.Devices {
			r := rng(seed, prof.Name, i, streamParams)
			d := DevicePlan{
				ID:      fmt.Sprintf("%s-%0*d", prefix, width, i+1),
				Profile: pi, Index: i,
				Phase: time.Duration(r.Int64N(int64(max(interval, 1)))),
			}
			if prof.ClockSkew > 0 {
				d.Skew = time.Duration(r.Int64N(2*int64(prof.ClockSkew)+1)) - prof.ClockSkew.D()
			}
			for _, name := range sortedFields(prof) {
				if prof.Fields[name].Model == "sine" {
					if d.SinePhase == nil {
						d.SinePhase = map[string]float64{}
					}
					d.SinePhase[name] = r.Float64() * 2 * math.Pi
				}
			}
			p.Devices = append(p.Devices, d)
		}
		for ai, a := range prof.Anomalies {
			r := rng(seed, prof.Name, "anomaly", ai, streamAnomaly)
			n := min(a.Devices.of(prof.Devices), prof.Devices)
			chosen := r.Perm(prof.Devices)[:n]
			w := Window{Kind: a.Kind, Field: a.Field, From: a.At.D(), To: a.At.D() + a.window(prof), Magnitude: a.Magnitude}
			for _, idx := range chosen {
				d := &p.Devices[first+idx]
				d.Anomalies = append(d.Anomalies, w)
			}
		}
		for i := first; i < len(p.Devices); i++ {
			slices.SortStableFunc(p.Devices[i].Anomalies, func(a, b Window) int { return int(a.From - b.From) })
		}
	}
	return p
}

func sortedFields(p *Profile) []string {
	names := make([]string, 0, len(p.Fields))
	for k := range p.Fields {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// events generates a device's disconnects or bursts: exponentially distributed gaps with the
// given mean, from the device's own random stream, so the schedule can be recomputed.
type events struct {
	r    *rand.Rand
	mean time.Duration
	gap  time.Duration // added after each event (downtime)
	next time.Duration
	on   bool
}

func newEvents(seed int64, profile string, index, stream int, mean, gap time.Duration) *events {
	e := &events{mean: mean, gap: gap, on: mean > 0}
	if e.on {
		e.r = rng(seed, profile, index, stream)
		e.next = e.draw()
	}
	return e
}

func (e *events) draw() time.Duration {
	return time.Duration(e.r.ExpFloat64() * float64(e.mean))
}

// pop returns the offset of the next event and schedules the one after.
func (e *events) pop() time.Duration {
	at := e.next
	e.next = at + e.gap + max(e.draw(), time.Millisecond)
	return at
}

// Truth is one injected fault, in hub time: anomalies (spike, drift, stuck, dropout), and the
// disconnects and bursts of the devices that have them. Event timestamps inside messages are
// shifted by the device's clock skew; Truth is not.
type Truth struct {
	Device    string    `json:"device"`
	Field     string    `json:"field,omitempty"`
	Kind      string    `json:"kind"`
	Start     time.Time `json:"start"`
	End       time.Time `json:"end"`
	Magnitude float64   `json:"magnitude,omitempty"`
}

// Truth lists the faults of a run that started at start, up to until (for disconnects and
// bursts, which go on for the whole run), ordered by start time then device.
func (p *Plan) Truth(start, until time.Time) []Truth {
	var out []Truth
	horizon := until.Sub(start)
	if d := p.Def.Duration.D(); d > 0 && d < horizon {
		horizon = d
	}
	for _, d := range p.Devices {
		prof := &p.Def.Profiles[d.Profile]
		for _, w := range d.Anomalies {
			if w.From >= horizon {
				continue // the run ended first
			}
			out = append(out, Truth{Device: d.ID, Field: w.Field, Kind: w.Kind, Start: start.Add(w.From), End: start.Add(w.To), Magnitude: w.Magnitude})
		}
		if dc := prof.Disconnects; dc.Every > 0 {
			ev := newEvents(p.Seed, prof.Name, d.Index, streamDisconnects, dc.Every.D(), dc.Downtime.D())
			for at := ev.pop(); at < horizon; at = ev.pop() {
				out = append(out, Truth{Device: d.ID, Kind: "disconnect", Start: start.Add(at), End: start.Add(at + dc.Downtime.D())})
			}
		}
		if b := prof.Bursts; b.Every > 0 {
			ev := newEvents(p.Seed, prof.Name, d.Index, streamBursts, b.Every.D(), 0)
			for at := ev.pop(); at < horizon; at = ev.pop() {
				out = append(out, Truth{Device: d.ID, Kind: "burst", Start: start.Add(at), End: start.Add(at), Magnitude: float64(b.Count)})
			}
		}
	}
	slices.SortStableFunc(out, func(a, b Truth) int {
		if c := a.Start.Compare(b.Start); c != 0 {
			return c
		}
		return compareStrings(a.Device, b.Device)
	})
	return out
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
