// Package sql is the rule language: a small SQL dialect, familiar to eKuiper
// and Azure Stream Analytics users, compiled into plans for the window
// engine (streams/window). It is pure: no I/O, no state.
//
//	SELECT device, avg(temperature) AS avg_t, max(temperature) AS max_t, count(*) AS n
//	FROM 'devices/+/telemetry'
//	WHERE type = 'thermostat' AND temperature > -50
//	GROUP BY device, TUMBLING(1m)
//	HAVING avg_t > 28
//
// [Parse] checks syntax and returns the tree; [Compile] also checks meaning
// and returns a [Rule] whose Plan the engine runs. Every error in a query is
// a *[ParseError] with the byte offset, line and column, and says what was
// expected and what was found:
//
//	line 4, col 29: expected ')' after window size, found 'FROM'
//
// # Grammar
//
//	query   = SELECT item {, item} FROM 'topic filter' [WHERE expr]
//	          GROUP BY key {, key} [outliers] [HAVING expr] [;]
//	outliers = OUTLIERS(column {, column}) [BY key {, key}] [EXPECT number]
//	item    = expr [[AS] name]
//	key     = name | window
//	window  = TUMBLING(size) | HOPPING(size, hop) | SLIDING(size)
//	        | SESSION(gap) | COUNTWINDOW(n)
//	expr    = expr OR expr | expr AND expr | NOT expr
//	        | sum cmp sum | sum [NOT] IN (expr {, expr}) | sum IS [NOT] NULL
//	cmp     = "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">="
//	sum     = term {(+ | -) term};  term = unary {(* | / | %) unary}
//	unary   = [- | +] unary | number | 'string' | TRUE | FALSE | NULL
//	        | name | func( [* | expr {, expr}] ) [. word] | ( expr )
//	name    = word {. word}      (a word is letters, digits and _, or "quoted" or `quoted`)
//
// Keywords and function names are case-insensitive; GROUP BY holds exactly
// one window, anywhere among the keys. The window functions also answer to
// TUMBLINGWINDOW, HOPPINGWINDOW, SLIDINGWINDOW and SESSIONWINDOW. Durations
// are a number and a unit, ns, us, ms, s, m, h or d, and may be compound:
// 500ms, 30s, 1m, 1h30m, 1.5h, 1d. Strings are in single quotes, a quote in
// them doubled; "double" and `back` quotes make names of words that are
// keywords or hold other characters. Comments run from -- to the end of the line, or are
// /* enclosed */. Expressions nest at most [MaxDepth] levels.
//
// # FROM
//
// An MQTT-style topic filter, '+' for one level and '#' for the rest, that
// starts with devices/ (device messages, e.g. 'devices/+/telemetry') or
// rules/ ('rules/hot_rooms': another rule's results, so rules compose).
// A rule cannot read its own results.
//
// # Names
//
// In WHERE and inside aggregates, names refer to the event:
//
//   - device, type: the device ID and device type;
//   - tags.<key>: a device tag, e.g. tags.site;
//   - anything else, or payload.<field>: a payload field, e.g. temperature,
//     env.rh (the flattened name, or the nested object path), and
//     payload.type for a field that would otherwise mean the device type.
//
// device, type, tags and payload match in any case; tag keys and payload
// fields are case-sensitive. GROUP BY keys are such names, plus the window.
// In SELECT, a name outside an aggregate must be a GROUP BY key. HAVING may
// use SELECT's column names (aliases), GROUP BY keys and aggregates.
//
// An output column is named by its alias, else by the name it shows
// (tags.site) or by its canonical text (avg(temperature)).
//
// # Values and NULL
//
// Values are numbers (float64), strings, booleans, times (window_start(),
// window_end()) and NULL. A missing field is NULL, and SQL's three-valued
// logic applies: comparisons and arithmetic with NULL are NULL, as are
// comparisons between different kinds ('5' = 5), arithmetic on
// non-numbers and division by zero. AND, OR and NOT follow Kleene logic.
// WHERE keeps an event, and HAVING a result, only when the condition is
// TRUE: an event that lacks a field its WHERE compares does not match
// (unless an OR branch is TRUE or IS NULL asks for it).
//
// # Functions
//
// Aggregates (see streams/window): count(*), count(x), sum, avg, min, max,
// first, last, stddev, percentile(x, p) with a constant p between 0 and 100.
// They come from the window package's registry, so a function registered
// there with window.RegisterAggregate is usable here with no change to this
// package. Each distinct aggregate call is computed once per window, even if
// SELECT and HAVING both use it. Aggregates are not allowed in WHERE or
// inside another aggregate.
//
// Scalar functions: abs, floor, ceil, sqrt, round(x) and round(x, digits),
// and window_start(), window_end() in SELECT and HAVING.
//
// # Anomaly functions
//
// spike(x, confidence, n) and changepoint(x, confidence, n) return a record
// with the fields score (a number) and anomaly (a boolean); write
// spike(temp, 0.99, 60).score or .anomaly, in SELECT and HAVING. Unlike
// aggregates they keep a history per group across windows: the group's last
// n points of x, in event-time order. Each point is scored against that
// history (spike: robust z-score against the rolling median and MAD, positive
// for spikes, negative for dips; changepoint: a lasting change of level or
// spread between the history's last quarter and the rest); the window's score
// is that of its most extreme point, anomaly is TRUE if any point exceeded the
// threshold at the confidence (0 < confidence < 1). The first n points of a
// group only fill the history. They need windows that do not overlap
// (TUMBLING, SESSION, COUNTWINDOW); COUNTWINDOW(1) scores every event. The
// history is in the rule's checkpoint, so restarts and replays give the same
// scores. See the anomaly package for the methods.
//
// # OUTLIERS
//
// OUTLIERS(t, v) BY tags.site EXPECT 0.02 after GROUP BY compares, in each
// window, every group's vector of the SELECT columns t and v (numbers) with
// the other groups of the window that share the BY keys (GROUP BY keys; none:
// all groups), and adds to every result outlier (TRUE, FALSE, or NULL without
// a verdict), outlier_score (the robust distance from the peers in standard
// deviations), outlier_peers (how many were compared) and outlier_warning
// (why there is no verdict, e.g. a peer group too small). SELECT expressions
// and HAVING may use outlier, outlier_score and outlier_peers. EXPECT is the
// expected share of outliers, above 0 and at most 0.25 (default 0.01); it
// sets how far a member must stand apart. Needs TUMBLING or HOPPING windows.
// See anomaly.Outliers for the method.
//
// Compile also checks: unknown functions (with a suggestion when one is
// close), argument counts, anomaly function parameters and fields, OUTLIERS
// columns that are not numbers, aggregates where they are not allowed, columns
// that are neither grouped nor aggregated, a missing or second window,
// duplicate column names and group keys, unknown names in HAVING and
// invalid topic filters.
package sql
