package fleet

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"
)

// device is one virtual device while it runs. Everything it decides comes from its plan and
// its random streams, in the order of its scheduled events, so the payloads and the offsets at
// which they are due do not depend on how punctually the runtime wakes it.
type device struct {
	plan   *DevicePlan
	prof   *Profile
	tr     transport
	c      *counters
	vals   *rand.Rand // walk steps and noise
	sends  *rand.Rand // late and out-of-order decisions
	fields []string
	keys   map[string][]byte // `"name":` for each field
	walk   map[string]float64
	last   map[string]any
	disc   *events
	burst  *events

	connected   bool
	reconnectAt time.Duration
	// quiet is set while a resumed run replays the events due before it resumed: the device
	// decides everything as it did (so what follows is what the uninterrupted run would have
	// sent) but sends, counts and connects nothing.
	quiet bool
	held  []byte   // out of order: sent after the next message
	late  []outMsg // due in order
}

type outMsg struct {
	due     time.Duration
	payload []byte
}

func newDevice(p *Plan, d *DevicePlan, tr transport, c *counters) *device {
	prof := &p.Def.Profiles[d.Profile]
	dv := &device{
		plan: d, prof: prof, tr: tr, c: c,
		vals:   rng(p.Seed, prof.Name, d.Index, streamValues),
		sends:  rng(p.Seed, prof.Name, d.Index, streamSends),
		fields: sortedFields(prof),
		keys:   map[string][]byte{}, walk: map[string]float64{}, last: map[string]any{},
		disc:  newEvents(p.Seed, prof.Name, d.Index, streamDisconnects, prof.Disconnects.Every.D(), prof.Disconnects.Downtime.D()),
		burst: newEvents(p.Seed, prof.Name, d.Index, streamBursts, prof.Bursts.Every.D(), 0),
	}
	for _, f := range dv.fields {
		k, _ := json.Marshal(f)
		dv.keys[f] = append(k, ':')
		if s := prof.Fields[f]; s.Model == "random_walk" {
			dv.walk[f] = s.Start
		}
	}
	return dv
}

type eventKind int

const (
	evTick eventKind = iota
	evLate
	evDisconnect
	evReconnect
	evBurst
)

// run sends until ctx ends or the run's duration (end > 0) is reached. start is the run's start;
// the device is connected already. A run resumed on another hub passes the offset it resumes
// at as from: events due before it are replayed quietly.
func (d *device) run(ctx context.Context, start time.Time, from, end time.Duration) {
	d.connected = true
	defer func() {
		if d.connected || d.quiet { // still quiet: its connection is open whatever the replay says
			d.tr.close()
			d.c.connected.Add(-1)
			metricDevices.Dec()
		}
	}()
	interval := d.prof.Rate.Interval()
	tick, k := d.plan.Phase, 0
	d.quiet = from > 0
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next, kind := tick, evTick
		if len(d.late) > 0 && d.late[0].due < next {
			next, kind = d.late[0].due, evLate
		}
		if d.disc.on {
			if !d.connected && d.reconnectAt < next {
				next, kind = d.reconnectAt, evReconnect
			} else if d.connected && d.disc.next < next {
				next, kind = d.disc.next, evDisconnect
			}
		}
		if d.burst.on && d.burst.next < next {
			next, kind = d.burst.next, evBurst
		}
		if end > 0 && next >= end {
			return
		}
		if d.quiet && next >= from {
			d.quiet = false
			if !d.connected { // down at the resume point: up again at its reconnect event
				d.tr.close()
				d.c.connected.Add(-1)
				metricDevices.Dec()
			}
		}
		if d.quiet {
			d.replay(kind, start, tick, k)
			if kind == evTick {
				tick += interval
				k++
			}
			continue
		}
		if wait := time.Until(start.Add(next)); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
		} else if ctx.Err() != nil {
			return
		}
		switch kind {
		case evTick:
			d.c.lag(time.Since(start.Add(tick)))
			d.tick(ctx, start, tick, k)
			tick += interval
			k++
		case evLate:
			m := d.late[0]
			d.late = d.late[1:]
			d.send(ctx, m.payload)
		case evDisconnect:
			at := d.disc.pop()
			d.reconnectAt = at + d.prof.Disconnects.Downtime.D()
			d.connected = false
			d.tr.close()
			d.c.disconnects.Add(1)
			d.c.connected.Add(-1)
			metricDevices.Dec()
		case evReconnect:
			if err := d.tr.connect(ctx); err != nil {
				d.c.errors.Add(1)
				d.reconnectAt = next + time.Second // try again
				continue
			}
			d.connected = true
			d.c.reconnects.Add(1)
			d.c.connected.Add(1)
			metricDevices.Inc()
		case evBurst:
			at := d.burst.pop()
			for j := range d.prof.Bursts.Count {
				off := at + time.Duration(j)*time.Millisecond
				payload := d.encode(start, off, d.sample(off, k, false))
				if d.connected {
					d.send(ctx, payload)
				}
			}
			d.c.bursts.Add(1)
		}
	}
}

// replay takes one event due before a resumed run's resume point the way run would, without
// sending, counting or touching the connection: the device's random streams, walks, held and
// late messages and connection state end up where the uninterrupted run had them.
func (d *device) replay(kind eventKind, start time.Time, off time.Duration, k int) {
	switch kind {
	case evTick:
		d.tick(context.Background(), start, off, k)
	case evLate:
		d.late = d.late[1:]
	case evDisconnect:
		d.reconnectAt = d.disc.pop() + d.prof.Disconnects.Downtime.D()
		d.connected = false
	case evReconnect:
		d.connected = true
	case evBurst:
		at := d.burst.pop()
		for j := range d.prof.Bursts.Count {
			d.sample(at+time.Duration(j)*time.Millisecond, k, false)
		}
	}
}

// tick produces the message due at offset off (the k-th) and sends, delays or holds it.
func (d *device) tick(ctx context.Context, start time.Time, off time.Duration, k int) {
	vals := d.sample(off, k, true)
	late, ooo := d.sends.Float64(), d.sends.Float64() // drawn always: decisions stay aligned
	for _, w := range d.plan.Anomalies {
		if w.Kind == Dropout && w.covers(off) {
			d.count(&d.c.dropped)
			return
		}
	}
	if !d.connected {
		d.count(&d.c.missed)
		return
	}
	payload := d.encode(start, off, vals)
	switch {
	case late < d.prof.Late.Fraction:
		d.count(&d.c.late)
		due := off + d.prof.Late.Delay.D()
		i := len(d.late)
		for i > 0 && d.late[i-1].due > due {
			i--
		}
		d.late = append(d.late, outMsg{})
		copy(d.late[i+1:], d.late[i:])
		d.late[i] = outMsg{due: due, payload: payload}
	case d.held == nil && ooo < d.prof.OutOfOrder:
		d.count(&d.c.outOfOrder)
		d.held = payload
	default:
		d.send(ctx, payload)
		if d.held != nil {
			d.send(ctx, d.held)
			d.held = nil
		}
	}
}

// count adds one to a counter, except while replaying quietly.
func (d *device) count(c *atomic.Uint64) {
	if !d.quiet {
		c.Add(1)
	}
}

func (d *device) send(ctx context.Context, payload []byte) {
	if d.quiet {
		return
	}
	if !d.connected {
		d.c.missed.Add(1)
		return
	}
	if err := d.tr.publish(ctx, payload); err != nil {
		if ctx.Err() == nil {
			d.c.errors.Add(1)
			metricErrors.WithLabelValues("publish").Inc()
		}
		return
	}
	d.c.sent.Add(1)
	d.c.sentMetric.Inc()
}

// sample computes every field at offset off for the k-th message; advance moves random walks
// (bursts do not).
func (d *device) sample(off time.Duration, k int, advance bool) map[string]any {
	out := make(map[string]any, len(d.fields))
	for _, name := range d.fields {
		s := d.prof.Fields[name]
		var v any
		switch s.Model {
		case "constant":
			v = s.Value
		case "sine":
			v = s.Mean + s.Amplitude*math.Sin(2*math.Pi*off.Seconds()/s.Period.D().Seconds()+d.plan.SinePhase[name])
		case "random_walk":
			w := d.walk[name]
			if advance && k > 0 {
				w += d.vals.NormFloat64() * s.Step
				if s.Min != nil {
					w = math.Max(w, *s.Min)
				}
				if s.Max != nil {
					w = math.Min(w, *s.Max)
				}
				d.walk[name] = w
			}
			v = w
		case "step":
			v = s.Values[int(off/s.Every.D())%len(s.Values)]
		case "sequence":
			v = s.Values[k%len(s.Values)]
		}
		if f, ok := v.(float64); ok && s.Noise > 0 {
			v = f + d.vals.NormFloat64()*s.Noise
		}
		stuck := false
		for _, w := range d.plan.Anomalies {
			if w.Field != name || !w.covers(off) {
				continue
			}
			switch w.Kind {
			case Spike:
				if f, ok := v.(float64); ok {
					v = f + w.Magnitude
				}
			case Drift:
				if f, ok := v.(float64); ok {
					v = f + w.Magnitude*float64(off-w.From)/float64(w.To-w.From)
				}
			case Stuck:
				if last, ok := d.last[name]; ok {
					v, stuck = last, true
				}
			}
		}
		if f, ok := v.(float64); ok && !stuck {
			dec := defaultDecimals
			if s.Decimals != nil {
				dec = *s.Decimals
			}
			p := math.Pow10(dec)
			v = math.Round(f*p) / p
		}
		if !stuck {
			d.last[name] = v
		}
		out[name] = v
	}
	return out
}

// encode writes {"ts":<Unix ms of the device clock>,"field":value,...}.
func (d *device) encode(start time.Time, off time.Duration, vals map[string]any) []byte {
	b := make([]byte, 0, 32+24*len(d.fields))
	b = append(b, '{')
	if d.prof.Timestamps == nil || *d.prof.Timestamps {
		b = append(b, `"ts":`...)
		b = strconv.AppendInt(b, start.Add(off+d.plan.Skew).UnixMilli(), 10)
	}
	for _, name := range d.fields {
		if len(b) > 1 {
			b = append(b, ',')
		}
		b = append(b, d.keys[name]...)
		switch v := vals[name].(type) {
		case float64:
			b = strconv.AppendFloat(b, v, 'f', -1, 64)
		case bool:
			b = strconv.AppendBool(b, v)
		default:
			s, _ := json.Marshal(v)
			b = append(b, s...)
		}
	}
	return append(b, '}')
}
