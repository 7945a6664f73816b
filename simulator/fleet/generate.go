package fleet

import (
	"container/heap"
	"time"
)

// Sample is one message a device of a plan sends, generated offline by Plan.Samples.
type Sample struct {
	Device string
	// Type is the device's type (the profile's type, else its name).
	Type string
	// Time is the message's timestamp: the device's clock, skew included.
	Time time.Time
	// Offset is when, from the start of the run, the device sends it.
	Offset time.Duration
	// Values are the fields, anomalies applied, as the message carries them.
	Values map[string]any
	// Anomalies are the device's anomaly windows covering this sample: its ground truth.
	Anomalies []Window
}

// Samples generates, without a clock or a network, every regular message the plan's devices
// send from start for the given duration, in send order (offset, then device), with the same
// values and anomalies as a live run of the plan. Transport effects are left out: no late,
// out-of-order or burst messages and no disconnects; dropout anomalies do drop samples. It
// stops early when fn returns false. The ground truth for evaluating detectors comes with each
// sample (Sample.Anomalies) and from Plan.Truth.
func (p *Plan) Samples(start time.Time, duration time.Duration, fn func(Sample) bool) {
	h := make(sampleHeap, 0, len(p.Devices))
	for i := range p.Devices {
		d := &p.Devices[i]
		prof := &p.Def.Profiles[d.Profile]
		typ := prof.Type
		if typ == "" {
			typ = prof.Name
		}
		h = append(h, &sampler{dev: newDevice(p, d, nil, nil), typ: typ, next: d.Phase, interval: prof.Rate.Interval(), idx: i})
	}
	heap.Init(&h)
	for len(h) > 0 {
		s := h[0]
		if s.next >= duration {
			heap.Pop(&h)
			continue
		}
		off := s.next
		vals := s.dev.sample(off, s.k, true)
		s.k++
		s.next += s.interval
		heap.Fix(&h, 0)
		var cover []Window
		dropped := false
		for _, w := range s.dev.plan.Anomalies {
			if w.covers(off) {
				cover = append(cover, w)
				dropped = dropped || w.Kind == Dropout
			}
		}
		if dropped {
			continue
		}
		if !fn(Sample{Device: s.dev.plan.ID, Type: s.typ, Time: start.Add(off + s.dev.plan.Skew), Offset: off, Values: vals, Anomalies: cover}) {
			return
		}
	}
}

type sampler struct {
	dev      *device
	typ      string
	next     time.Duration
	interval time.Duration
	k, idx   int
}

// sampleHeap orders devices by their next send offset, then by index.
type sampleHeap []*sampler

func (h sampleHeap) Len() int { return len(h) }
func (h sampleHeap) Less(i, j int) bool {
	if h[i].next != h[j].next {
		return h[i].next < h[j].next
	}
	return h[i].idx < h[j].idx
}
func (h sampleHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *sampleHeap) Push(x any)   { *h = append(*h, x.(*sampler)) }
func (h *sampleHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
