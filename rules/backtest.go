package rules

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tributary-iot/tributary/canary"
	"github.com/tributary-iot/tributary/simulator"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/window"
)

// Backtest limits.
const (
	// MaxBacktestMessages bounds the messages a backtest may read: a selection that may hold
	// more is refused before anything is read.
	MaxBacktestMessages = 1_000_000
	// MaxBacktestResults bounds the results a backtest lists per version (all are counted).
	MaxBacktestResults = 100_000
	// DefaultBacktestName names the results of a backtest of a query given inline.
	DefaultBacktestName = "backtest"
)

// backtestLimit is MaxBacktestMessages; tests lower it.
var backtestLimit uint64 = MaxBacktestMessages

// BacktestVersion is one version of a rule to backtest: an existing rule (Rule), whose stored
// definition is used, or a query given inline (SQL), or an existing rule with some of its
// fields replaced (Rule plus SQL, Lateness, IdleTimeout or MaxFuture).
type BacktestVersion struct {
	// Rule names an existing rule whose definition is the starting point.
	Rule string `json:"rule,omitempty"`
	// Name names an inline query's results (rule and id); default Rule, else "backtest".
	Name        string    `json:"name,omitempty"`
	SQL         string    `json:"sql,omitempty"`
	Lateness    *Duration `json:"lateness,omitempty"`
	IdleTimeout *Duration `json:"idle_timeout,omitempty"`
	MaxFuture   *Duration `json:"max_future,omitempty"`
}

// BacktestRequest is what to backtest over which input.
type BacktestRequest struct {
	Version BacktestVersion
	// Compare, when set, runs a second version over the same input and compares the results.
	Compare *BacktestVersion
	// Selection is a time range or a scenario. A time range without devices or topics reads
	// the topics the versions read (their FROM), not all of devices/#.
	Selection simulator.Selection
	// Tenant is the tenant whose messages the versions read, as a live rule of that tenant
	// does (tenant.go): by default the tenant of the first version's rule, else the default
	// tenant. When set, a version naming a rule of another tenant is refused as unknown.
	Tenant string
}

// BacktestCounts count what a version's engine did, as the rule's stats do.
type BacktestCounts struct {
	EventsIn     uint64 `json:"events_in"`
	Accepted     uint64 `json:"accepted"`
	Filtered     uint64 `json:"filtered"`
	Late         uint64 `json:"late"`
	Rejected     uint64 `json:"rejected"`
	Results      uint64 `json:"results"`
	HavingFailed uint64 `json:"having_failed"`
}

// BacktestRun is one version's outcome.
type BacktestRun struct {
	Rule        string   `json:"rule"`
	SQL         string   `json:"sql"`
	Lateness    Duration `json:"lateness"`
	IdleTimeout Duration `json:"idle_timeout"`
	MaxFuture   Duration `json:"max_future"`
	Source      string   `json:"source"`
	Window      string   `json:"window"`
	// Messages is the number of input messages on the version's source topics.
	Messages uint64         `json:"messages"`
	Counts   BacktestCounts `json:"counts"`
	// Results are in the order the rule would have published them, as on rules/<name>/results.
	Results []Result `json:"results"`
	// Truncated is set when more than MaxBacktestResults results were left out of Results.
	Truncated bool `json:"truncated,omitempty"`
}

// ResultChange is a window and group both versions produced, with different values.
type ResultChange struct {
	GroupKey    string         `json:"group_key"`
	Group       map[string]any `json:"group"`
	WindowStart time.Time      `json:"window_start"`
	WindowEnd   time.Time      `json:"window_end"`
	A           map[string]any `json:"a"`
	B           map[string]any `json:"b"`
}

// BacktestDiff compares the results of two versions, keyed by group key and window bounds.
type BacktestDiff struct {
	OnlyA   []Result       `json:"only_a"`
	OnlyB   []Result       `json:"only_b"`
	Changed []ResultChange `json:"changed"`
	Same    int            `json:"same"`
}

// BacktestReport is the answer of a backtest.
type BacktestReport struct {
	// Messages is the number of messages read from the input; Skipped those read but outside
	// the selection.
	Messages uint64 `json:"messages"`
	Skipped  uint64 `json:"skipped"`
	// Tenant is the tenant whose messages were read (BacktestRequest.Tenant).
	Tenant   string        `json:"tenant"`
	Scenario string        `json:"scenario,omitempty"`
	From     time.Time     `json:"from,omitzero"`
	To       time.Time     `json:"to,omitzero"`
	Run      BacktestRun   `json:"run"`
	Compare  *BacktestRun  `json:"compare,omitempty"`
	Diff     *BacktestDiff `json:"diff,omitempty"`
	Took     Duration      `json:"took"`
}

// Backtester runs rules over stored input in isolation: nothing is published, no rule's state
// is read or written.
type Backtester struct {
	m   *Manager
	res *simulator.Resolver
}

// NewBacktester backtests with the definitions and device registry of m, reading input
// resolved by res.
func NewBacktester(m *Manager, res *simulator.Resolver) *Backtester {
	return &Backtester{m: m, res: res}
}

// btVersion is a version ready to run.
type btVersion struct {
	run BacktestRun
	c   *compiled
	eng *window.Engine
	own string
	rr  bool // reads rules/: skip its own outputs
	// tenant is the tenant of the rule the version starts from ("" for an inline query).
	tenant string
	// hist is a canary's record of interval outcomes, for its verdicts.
	hist []canary.Outcome
}

// prepare resolves v to a definition and compiles it; field prefixes errors ("" or "compare.").
// With tenant set, only that tenant's rules can be named.
func (b *Backtester) prepare(ctx context.Context, v BacktestVersion, tenant, defName, field string) (*btVersion, error) {
	var spec Spec
	ruleTenant := ""
	if v.Rule != "" {
		r, err := b.m.Get(ctx, v.Rule)
		if err == nil && tenant != "" && r.TenantOf() != tenant {
			err = ErrNotFound // another tenant's rule: as if there were none
		}
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				return nil, fmt.Errorf("%w: %srule: no rule named %q", ErrNotFound, field, v.Rule)
			}
			return nil, err
		}
		ruleTenant = r.TenantOf()
		spec = Spec{Name: r.Name, SQL: r.SQL, Lateness: r.Lateness, IdleTimeout: r.IdleTimeout, MaxFuture: r.MaxFuture}
		if r.Canary != nil && v.SQL == "" {
			// A canary is backtested as a canary: scored per interval with verdicts, as live.
			def := *r.Canary
			spec.SQL, spec.Canary, spec.Tenant = "", &def, r.Tenant
		}
	} else if strings.TrimSpace(v.SQL) == "" {
		return nil, invalidf(field+"sql", `missing: give "sql" or the name of an existing "rule"`)
	}
	spec.Name = cmpOr(v.Name, cmpOr(spec.Name, defName))
	if v.SQL != "" {
		spec.SQL = v.SQL
	}
	if v.Lateness != nil {
		spec.Lateness = v.Lateness
	}
	if v.IdleTimeout != nil {
		spec.IdleTimeout = v.IdleTimeout
	}
	if v.MaxFuture != nil {
		spec.MaxFuture = v.MaxFuture
	}
	c, err := compile(&spec)
	if err != nil {
		var ie *InvalidError
		if errors.As(err, &ie) {
			f := ie.Field
			if f == "" {
				f = "sql"
			}
			return nil, invalid(field+f, ie.Err)
		}
		return nil, err
	}
	eng, err := window.New(c.plan, c.opts)
	if err != nil {
		return nil, invalid(field+"sql", err)
	}
	bv := &btVersion{c: c, eng: eng, own: "rules/" + spec.Name + "/", tenant: ruleTenant}
	bv.rr = strings.HasPrefix(c.filter, "rules/") || strings.HasPrefix(c.filter, "+") || strings.HasPrefix(c.filter, "#")
	bv.run = BacktestRun{
		Rule: spec.Name, SQL: spec.SQL, Lateness: Duration(c.opts.Lateness), IdleTimeout: Duration(c.opts.IdleTimeout),
		MaxFuture: Duration(c.opts.MaxFuture), Source: c.rule.Source.Topic, Window: c.plan.Window.String(), Results: []Result{},
	}
	return bv, nil
}

// Run backtests req. Errors: an *InvalidError (ErrInvalid) naming the field for a bad
// definition, ErrNotFound for an unknown rule, the simulator's ErrInvalid, ErrEmpty and
// ErrNotFound for the selection (simulator.ErrInvalid also for a selection that is too large).
func (b *Backtester) Run(ctx context.Context, req BacktestRequest) (BacktestReport, error) {
	began := time.Now()
	a, err := b.prepare(ctx, req.Version, req.Tenant, DefaultBacktestName, "")
	if err != nil {
		return BacktestReport{}, err
	}
	tenant := cmpOr(req.Tenant, cmpOr(a.tenant, DefaultTenant))
	vs := []*btVersion{a}
	if req.Compare != nil {
		bv, err := b.prepare(ctx, *req.Compare, tenant, a.run.Rule, "compare.")
		if err != nil {
			return BacktestReport{}, err
		}
		vs = append(vs, bv)
	}
	sel := req.Selection
	if sel.Scenario == "" && len(sel.Devices) == 0 && len(sel.Topics) == 0 {
		for _, v := range vs {
			if len(sel.Topics) == 0 || sel.Topics[0] != v.c.filter {
				sel.Topics = append(sel.Topics, v.c.filter)
			}
		}
	}
	src, err := b.res.Resolve(ctx, sel)
	if err != nil {
		return BacktestReport{}, err
	}
	if src.Estimate > backtestLimit {
		return BacktestReport{}, fmt.Errorf("%w: selection: up to %d messages, more than the %d a backtest reads: narrow from/to, devices or topics",
			simulator.ErrInvalid, src.Estimate, backtestLimit)
	}
	in, err := simulator.OpenInput(ctx, b.res.JetStream(), src, simulator.InputOptions{Order: simulator.OrderStream})
	if err != nil {
		return BacktestReport{}, err
	}
	defer in.Close()
	var others uint64 // messages of other tenants: read, not counted, not seen by the versions
	for {
		env, err := in.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return BacktestReport{}, err
		}
		if in.Stats().Read > backtestLimit {
			return BacktestReport{}, fmt.Errorf("%w: selection: more than %d messages: narrow from/to, devices or topics", simulator.ErrInvalid, backtestLimit)
		}
		if envTenant(env, b.m.devs) != tenant {
			others++
			continue
		}
		var events []window.Event
		decoded := false
		for _, v := range vs {
			if !streams.MatchTopic(v.c.filter, env.Topic) || v.rr && strings.HasPrefix(env.Topic, v.own) {
				continue
			}
			if !decoded {
				events, decoded = decodeEvents(env, b.m.devs), true
			}
			v.run.Messages++
			v.process(events)
		}
	}
	rep := BacktestReport{Messages: in.Stats().Read - others, Skipped: in.Stats().Skipped, Scenario: src.Scenario, From: src.From, To: src.To, Tenant: tenant}
	for _, v := range vs {
		v.add(v.eng.Flush())
		es := v.eng.Stats()
		v.run.Counts.EventsIn, v.run.Counts.Accepted, v.run.Counts.Filtered = es.EventsIn, es.Accepted, es.Filtered
		v.run.Counts.Late, v.run.Counts.Rejected = es.Late, es.Rejected
	}
	rep.Run = a.run
	if len(vs) > 1 {
		rep.Compare = &vs[1].run
		rep.Diff = diffResults(a.run.Results, vs[1].run.Results)
	}
	rep.Took = Duration(time.Since(began).Round(time.Millisecond))
	return rep, nil
}

// process feeds one message's events, as the live runner does, without publishing anything.
func (v *btVersion) process(events []window.Event) {
	for i := range events {
		res, _ := v.eng.Process(events[i])
		v.add(res)
	}
}

// add keeps the results that pass HAVING, in the shape the live runner publishes; a canary's
// per-device rows are scored per interval instead, into the results the canary publishes.
func (v *btVersion) add(res []window.Result) {
	if d := v.c.canary; d != nil {
		_ = eachInterval(res, func(rows []window.Result) error {
			var body Result
			body, v.hist, _, _ = d.result(v.run.Rule, v.hist, rows)
			v.keep(body)
			return nil
		})
		return
	}
	for _, r := range res {
		if v.c.alert {
			pass := r.Values[havingColumn] == true
			delete(r.Values, havingColumn)
			if !pass {
				v.run.Counts.HavingFailed++
				continue
			}
		}
		v.keep(Result{Rule: v.run.Rule, ID: r.ID, Group: r.Group, GroupKey: r.GroupKey,
			WindowStart: r.WindowStart, WindowEnd: r.WindowEnd, Values: r.Values})
	}
}

// keep counts a result and lists it, up to MaxBacktestResults.
func (v *btVersion) keep(r Result) {
	v.run.Counts.Results++
	if len(v.run.Results) >= MaxBacktestResults {
		v.run.Truncated = true
		return
	}
	v.run.Results = append(v.run.Results, r)
}

// diffResults compares results by group key and window bounds (the n-th result with the same
// key in one list against the n-th in the other, for windows that repeat, e.g. SLIDING).
func diffResults(a, b []Result) *BacktestDiff {
	key := func(r *Result, seen map[string]int) string {
		k := r.GroupKey + "\x00" + r.WindowStart.UTC().Format(time.RFC3339Nano) + "\x00" + r.WindowEnd.UTC().Format(time.RFC3339Nano)
		n := seen[k]
		seen[k]++
		return fmt.Sprintf("%s\x00%d", k, n)
	}
	inB := map[string]int{}
	seenB := map[string]int{}
	for i := range b {
		inB[key(&b[i], seenB)] = i
	}
	d := &BacktestDiff{OnlyA: []Result{}, OnlyB: []Result{}, Changed: []ResultChange{}}
	matched := make([]bool, len(b))
	seenA := map[string]int{}
	for i := range a {
		j, ok := inB[key(&a[i], seenA)]
		if !ok {
			d.OnlyA = append(d.OnlyA, a[i])
			continue
		}
		matched[j] = true
		if sameValues(a[i].Values, b[j].Values) {
			d.Same++
			continue
		}
		d.Changed = append(d.Changed, ResultChange{GroupKey: a[i].GroupKey, Group: a[i].Group,
			WindowStart: a[i].WindowStart, WindowEnd: a[i].WindowEnd, A: a[i].Values, B: b[j].Values})
	}
	for j := range b {
		if !matched[j] {
			d.OnlyB = append(d.OnlyB, b[j])
		}
	}
	return d
}

// sameValues compares values as they are published (JSON).
func sameValues(a, b map[string]any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}
