package window

import (
	"bytes"
	"container/heap"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"slices"
)

// snapshotMagic starts a snapshot; its last byte is the format's version. Version 2 added
// each series group's last window end; version 1 snapshots are still read.
const snapshotMagic = "TRWS\x02"

// Snapshot returns the engine's complete state: open windows with their
// aggregate states, buffered SLIDING events, the watermark and clocks, the
// counters and Stats().LastSeq, the input sequence it covers. The same state
// always gives the same bytes.
//
// For exactly-once results, take a snapshot only after every result returned
// so far has been published (acknowledged), store it with LastSeq, and after
// a restart Restore it and resume the input after LastSeq. Results between
// the snapshot and the crash are then produced again, equal and with equal
// IDs, and JetStream's duplicate window drops them.
func (e *Engine) Snapshot() ([]byte, error) {
	b := []byte(snapshotMagic)
	b = appendString(b, e.fp)
	for _, x := range []int64{e.wm, e.maxTime, e.lastRecv, e.now} {
		b = appendI64(b, x)
	}
	b = appendUvarint(b, e.lastSeq)
	for _, x := range []uint64{e.st.EventsIn, e.st.Accepted, e.st.Filtered, e.st.Late, e.st.Rejected, e.st.Results, e.st.HavingFiltered} {
		b = appendUvarint(b, x)
	}
	keys := make([]string, 0, len(e.groups))
	for k := range e.groups {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = appendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		g := e.groups[k]
		for _, v := range g.vals {
			b = appendValue(b, v)
		}
		b = appendI64(b, g.closedEnd)
		b = appendUvarint(b, g.ord)
		b = appendUvarint(b, uint64(len(g.wins)))
		for _, w := range g.wins {
			b = appendI64(b, w.start)
			b = appendI64(b, w.end)
			b = appendUvarint(b, w.n)
			b = appendUvarint(b, w.ord)
			for _, a := range w.aggs {
				b = a.AppendState(b)
			}
		}
		b = appendUvarint(b, uint64(len(g.entries)))
		b = appendUvarint(b, uint64(g.pending))
		k := len(e.plan.Aggregates)
		for j, en := range g.entries {
			b = appendI64(b, en.ts)
			b = appendUvarint(b, en.seq)
			for _, v := range g.argv[j*k : (j+1)*k] {
				b = appendValue(b, v)
			}
		}
		b = e.appendSeries(b, g)
	}
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b)), nil
}

// Restore replaces the engine's state with a snapshot taken by an engine
// with the same plan and options. It returns ErrSnapshotMismatch for a
// snapshot of another plan or options and ErrCorruptSnapshot for damaged
// bytes; on error the engine is unchanged.
func (e *Engine) Restore(snap []byte) error {
	prefix := snapshotMagic[:len(snapshotMagic)-1]
	if len(snap) < len(snapshotMagic)+4 || !bytes.HasPrefix(snap, []byte(prefix)) {
		return ErrCorruptSnapshot
	}
	version := snap[len(prefix)]
	if version < 1 || version > snapshotMagic[len(prefix)] {
		return ErrCorruptSnapshot
	}
	body := snap[:len(snap)-4]
	if crc32.ChecksumIEEE(body) != binary.BigEndian.Uint32(snap[len(snap)-4:]) {
		return ErrCorruptSnapshot
	}
	b := body[len(snapshotMagic):]
	fp, b, err := readString(b)
	if err != nil {
		return err
	}
	if fp != e.fp {
		return fmt.Errorf("%w: snapshot %q, engine %q", ErrSnapshotMismatch, fp, e.fp)
	}
	n := &Engine{} // holds the decoded state until it is complete
	for _, x := range []*int64{&n.wm, &n.maxTime, &n.lastRecv, &n.now} {
		if *x, b, err = readI64(b); err != nil {
			return err
		}
	}
	if n.lastSeq, b, err = readUvarint(b); err != nil {
		return err
	}
	for _, x := range []*uint64{&n.st.EventsIn, &n.st.Accepted, &n.st.Filtered, &n.st.Late, &n.st.Rejected, &n.st.Results, &n.st.HavingFiltered} {
		if *x, b, err = readUvarint(b); err != nil {
			return err
		}
	}
	ng, b, err := readUvarint(b)
	if err != nil {
		return err
	}
	if ng > uint64(len(b)) {
		return ErrCorruptSnapshot
	}
	groups := make(map[string]*group, ng)
	var timers timerHeap
	open := 0
	nAggs := len(e.plan.Aggregates)
	for range ng {
		g := &group{vals: make([]Value, len(e.plan.GroupBy)), timer: never, hidx: -1}
		var key []byte
		for i := range g.vals {
			if g.vals[i], b, err = readValue(b); err != nil {
				return err
			}
			key = g.vals[i].appendKey(key)
		}
		g.key = string(key)
		if _, dup := groups[g.key]; dup {
			return ErrCorruptSnapshot
		}
		if g.closedEnd, b, err = readI64(b); err != nil {
			return err
		}
		if g.ord, b, err = readUvarint(b); err != nil {
			return err
		}
		nw, rest, err := readUvarint(b)
		if err != nil || nw > uint64(len(rest)) {
			return ErrCorruptSnapshot
		}
		b = rest
		for range nw {
			w := &win{aggs: make([]Aggregator, nAggs)}
			if w.start, b, err = readI64(b); err != nil {
				return err
			}
			if w.end, b, err = readI64(b); err != nil {
				return err
			}
			if w.n, b, err = readUvarint(b); err != nil {
				return err
			}
			if w.ord, b, err = readUvarint(b); err != nil {
				return err
			}
			for i := range w.aggs {
				w.aggs[i] = e.newAggregator(i)
				if b, err = w.aggs[i].ReadState(b); err != nil {
					return ErrCorruptSnapshot
				}
			}
			w.closeAt = sadd(w.end, e.lateness)
			if e.kind == CountWindow {
				w.closeAt = never
			}
			g.wins = append(g.wins, w)
			open++
		}
		ne, rest, err := readUvarint(b)
		if err != nil || ne > uint64(len(rest)) {
			return ErrCorruptSnapshot
		}
		b = rest
		pending, rest, err := readUvarint(b)
		if err != nil || pending > ne {
			return ErrCorruptSnapshot
		}
		b = rest
		g.pending = int(pending)
		for range ne {
			var en entry
			if en.ts, b, err = readI64(b); err != nil {
				return err
			}
			if en.seq, b, err = readUvarint(b); err != nil {
				return err
			}
			for range nAggs {
				var v Value
				if v, b, err = readValue(b); err != nil {
					return err
				}
				g.argv = append(g.argv, v)
			}
			g.entries = append(g.entries, en)
		}
		if b, err = e.readSeries(b, g, version, n.wm); err != nil {
			return err
		}
		open += len(g.entries) - g.pending
		g.timer = e.timerOf(g, n.wm)
		if g.timer != never {
			heap.Push(&timers, g)
		}
		groups[g.key] = g
	}
	if len(b) != 0 {
		return ErrCorruptSnapshot
	}
	e.groups, e.timers, e.open = groups, timers, open
	e.wm, e.maxTime, e.lastRecv, e.now, e.lastSeq, e.st = n.wm, n.maxTime, n.lastRecv, n.now, n.lastSeq, n.st
	return nil
}

// timerOf computes a restored group's timer, as fire leaves it.
func (e *Engine) timerOf(g *group, wm int64) int64 {
	switch e.kind {
	case CountWindow:
		if g.series != nil && len(g.wins) == 0 {
			return sadd(g.seen, e.seriesTTL)
		}
		return never
	case Sliding:
		t := int64(never)
		if g.pending < len(g.entries) {
			t = sadd(sadd(g.entries[g.pending].ts, e.lateness), 1)
		}
		if len(g.entries) > 0 {
			t = min(t, sadd(sadd(g.entries[0].ts, e.size), e.lateness))
		}
		return t
	}
	if len(g.wins) > 0 {
		return g.wins[0].closeAt
	}
	if e.kind == Session && g.closedEnd != noTime {
		if t := sadd(sadd(g.closedEnd, e.gap), e.lateness); t > wm {
			return t
		}
	}
	if g.series != nil {
		return sadd(g.seen, e.seriesTTL) // the history's expiry (advanceTo)
	}
	return never
}
