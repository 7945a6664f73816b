// Package window is the windowed aggregation engine: pure, event-time and
// deterministic, with no I/O. It runs one compiled rule (a [Plan], usually
// from the SQL dialect in rules/sql) over one ordered input and returns
// results; reading the input from JetStream, publishing results and
// storing snapshots is the caller's job.
//
//	rule, err := sql.Compile("hot_rooms", query)
//	e, err := window.New(rule.Plan, window.Options{Lateness: 10 * time.Second, IdleTimeout: time.Minute})
//	for each message, in stream order:
//		results, disposition := e.Process(event)   // publish results; route Late/Rejected events
//	every second:
//		results := e.Advance(time.Now().Add(-slack))  // idle closing
//	every checkpoint interval, after the results so far are acknowledged:
//		snap, _ := e.Snapshot()                      // store with e.Stats().LastSeq
//
// # Event time and the watermark
//
// Windows are defined on the event time (Event.Time, the envelope's event
// time), never on arrival. The watermark W is per rule: the largest event
// time among all events the rule has processed (including those WHERE
// filtered out and late ones, excluding Rejected ones), or more when idle
// (below). It never goes back.
//
// A window closes, and its result is emitted, when W reaches its end plus
// the rule's Options.Lateness. So with Lateness 10s, the window
// [12:00, 12:01) is emitted by the first event stamped 12:01:10 or later, of
// any group.
//
// Why per rule and not per group: a per-group watermark only advances with
// that group's own events, so a device that goes quiet would hold its last
// window open until it speaks again (or an idle timeout per group fires),
// and memory would grow with every group ever seen. With one watermark per
// rule, the fleet's traffic closes every group's windows promptly and state
// is bounded by time, not by the number of devices. The cost: a group whose
// events arrive more than Lateness behind the rest of the fleet (a device
// with a slow clock, a gateway flushing a buffer after an outage) has them
// counted as late. Set Lateness to the delay you expect; late events are
// visible, never silently dropped. A device whose clock runs ahead would drag
// W forward for everyone: Options.MaxFuture rejects events stamped further
// than that after their receive time.
//
// # Windows
//
// Windows are aligned to the Unix epoch in UTC: TUMBLING(1d) windows start
// at midnight UTC.
//
//   - TUMBLING(size): [k*size, (k+1)*size). An event is in exactly one.
//   - HOPPING(size, hop): [k*hop, k*hop+size), hop <= size; an event is in
//     about size/hop of them (at most [MaxHopsPerEvent]).
//   - SLIDING(size): one window per accepted event, (t-size, t] where t is
//     the event's time, holding every event of the group in that range,
//     including events that arrive later but within the lateness. It closes
//     when W passes t + Lateness; with Lateness 0 an event's result is
//     emitted when a later event time is seen.
//   - SESSION(gap): the events of a group with less than gap between
//     neighbours. A session is [first event, last event + gap) and closes
//     when W reaches last + gap + Lateness. An out-of-order event that falls
//     within gap of two sessions merges them; one before a session's start
//     extends it backwards.
//   - COUNTWINDOW(n): every n events of a group in input (stream) order,
//     not event-time order; bounds are the earliest and latest event time in
//     it, both included. It has no lateness: an event is never late, and a
//     window is emitted exactly when its n-th event arrives; partial windows
//     are never emitted (not on idle, not on Flush).
//
// # Late events
//
// An event is late when a window it belongs to has already closed; it is
// then added to no window at all (for HOPPING: if its earliest window has
// closed, the later ones do not get it either), so every accepted event is
// in all of its windows and every late event in none. Precisely, with W the
// watermark before the event:
//
//   - TUMBLING, HOPPING: late if end + Lateness <= W for the earliest
//     window containing t. Disorder within a still-open window is fine even
//     with Lateness 0.
//   - SLIDING: late if t + Lateness < W.
//   - SESSION: late if t falls into a session that has closed (before the
//     end of the group's last closed session), or if it joins no open
//     session and a new session [t, t+gap) would already be closed
//     (t + gap + Lateness <= W).
//
// Process returns Late for such events and Stats counts them. The caller
// publishes them to rules/<name>/late, so nothing is silently dropped.
// Events with a time outside 1823–2116 (±2^62 ns), a zero time, or more
// than MaxFuture ahead of their receive time are Rejected: counted, in no
// window, and they do not move the watermark; route them to the late subject
// too, with the reason.
//
// Within lateness, results do not depend on arrival order: if every event
// arrives before W passes its time + Lateness, any arrival order gives the
// same windows with the same contents (floating-point sums may differ in the
// last bits, because addition is not associative; SLIDING recomputes each
// window in time order and is exact).
//
// # Idle closing
//
// If the whole input goes quiet, W stops, and the last windows would never
// close. With Options.IdleTimeout set, once no event has been received for
// IdleTimeout of processing time, event time is assumed to pass as
// processing time does: W becomes the latest event time plus the time since
// the last receipt. A window then closes at about the processing time it
// would have closed had events kept flowing. A device that goes quiet while
// others send needs none of this: the fleet moves W.
//
// Processing time comes from Event.Received (the envelope's receive time,
// which is stored in the stream) and from Advance(now). Process applies the
// idle rule with the event's Received before handling the event, exactly as
// the Advance calls made during the gap did. So a replay, which sees the
// same Received stamps but no Advance calls, closes the same windows with
// the same contents and classifies every event the same, provided the live
// caller passes Advance a time that no undelivered event was received
// before (time.Now() minus the longest expected delay from receipt to the
// engine). The trade-off: after an idle period, events stamped before the
// extrapolated W (a gateway flushing old readings after an outage) are late.
// IdleTimeout 0 (the default) disables idle closing; then only events move W.
//
// # Results
//
// A Result carries the rule, the window bounds, the group key (as values
// and in canonical form, a JSON array in GROUP BY order) and the output
// columns. Its ID is deterministic: rule/start-end/hash(group key), plus an
// ordinal for COUNTWINDOW and for SLIDING results of events with equal
// times. Results of one call are sorted by window end, start, group key and
// ID. HAVING drops results after aggregation (counted in Stats).
//
// # Exactly once
//
// The engine is a deterministic function of its input: the sequence of
// Process calls (events including Received and Seq) and Advance calls.
// Snapshot captures the whole state, including the highest Seq processed.
// A caller that publishes each result with its ID as JetStream Msg-Id,
// snapshots only after every result so far is acknowledged, and after a
// crash restores the last snapshot and re-reads the input after its LastSeq,
// produces each result once: results emitted between the snapshot and the
// crash come out again, equal and with equal IDs, and are dropped by
// JetStream's duplicate window (which must be longer than the checkpoint
// interval plus the time to restart). Restore refuses a snapshot of another
// plan or other options ([ErrSnapshotMismatch]).
//
// # Aggregates
//
// count(*) counts events; count(x) non-NULL values; sum, avg, min, max and
// stddev (sample, by Welford's algorithm) use numbers and ignore anything
// else; first and last take the non-NULL value with the earliest or latest
// event time, ties broken by Seq; percentile(x, p) with 0 <= p <= 100
// interpolates linearly between closest ranks. Over no values they are NULL
// (count is 0). Functions are registered in a table ([RegisterAggregate]):
// the SQL compiler finds them there, the engine only sees constructors.
//
// # Series functions and fleet outliers
//
// Series functions (spike, changepoint) keep a history per group across
// windows; the engine hands them each closed window's points in event-time
// order and keeps their state in snapshots (see SeriesState). A plan with
// Fleet holds back the rows of windows that close together and judges each
// group against its peers before HAVING (see Fleet).
//
// # Memory and speed
//
// count, sum, avg, min, max, first, last and stddev keep a few words per
// window, no per-event data. percentile keeps every value of its window (8
// bytes each). SLIDING buffers the group's events of the last size +
// Lateness (one entry per event, with its aggregate arguments) and
// recomputes each window from them, O(events in window) per result. An open
// group-window costs about 370 bytes of heap for avg over TUMBLING grouped
// by device (group state included; BenchmarkOpenWindowMemory). One core
// processes several million events per second for that rule
// (BenchmarkTumblingAvg1000Devices).
//
// An Engine is not safe for concurrent use: a rule's input is one ordered
// stream, so give each rule its own engine and goroutine.
package window
