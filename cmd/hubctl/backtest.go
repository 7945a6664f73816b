package main

import (
	"fmt"
	"strconv"
	"strings"
)

// backtest runs POST /api/v1/backtests: hubctl rules backtest [RULE] [--sql Q] [--compare-sql Q |
// --compare-rule R] [--from -1h] [--to T] [--devices a,b] [--topics t,u] [--scenario S]
// [--tenant T]. The table shows each version's counts and, with a second version, the diff;
// -o json or yaml shows the whole answer, results included.
func (c *cli) backtest(args []string) error {
	fs := c.flags("rules backtest")
	sql := fs.String("sql", "", "the query to run (with RULE: replaces the rule's)")
	cmpSQL := fs.String("compare-sql", "", "a second version: this query (with RULE, against the rule)")
	cmpRule := fs.String("compare-rule", "", "a second version: this existing rule")
	from := fs.String("from", "-1h", "start of the input: RFC 3339, Unix ms or -1h")
	to := fs.String("to", "", "end of the input (default now)")
	devs := fs.String("devices", "", "comma-separated devices to read (default: the versions' FROM topics)")
	topics := fs.String("topics", "", "comma-separated topic filters to read")
	scenario := fs.String("scenario", "", "a saved scenario to read instead of a time range")
	tenant := fs.String("tenant", "", "the tenant whose messages to read (default: the rule's)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return usageErrorf("rules backtest: want at most one rule name, got %d", len(pos))
	}
	if len(pos) == 0 && *sql == "" {
		return usageErrorf("rules backtest: want a rule name or --sql")
	}
	if *cmpSQL != "" && *cmpRule != "" {
		return usageErrorf("rules backtest: give --compare-sql or --compare-rule, not both")
	}
	if err := c.checkOutput("table", "json", "yaml"); err != nil {
		return err
	}
	body := map[string]any{}
	if len(pos) == 1 {
		body["rule"] = pos[0]
	}
	if *sql != "" {
		body["sql"] = *sql
	}
	if *cmpSQL != "" || *cmpRule != "" {
		cmp := map[string]any{}
		if *cmpRule != "" {
			cmp["rule"] = *cmpRule
		} else if len(pos) == 1 {
			cmp["rule"] = pos[0]
		}
		if *cmpSQL != "" {
			cmp["sql"] = *cmpSQL
		}
		body["compare"] = cmp
	}
	if *scenario != "" {
		body["scenario"] = *scenario
	} else {
		body["from"] = *from
		if *to != "" {
			body["to"] = *to
		}
	}
	if *devs != "" {
		body["devices"] = strings.Split(*devs, ",")
	}
	if *topics != "" {
		body["topics"] = strings.Split(*topics, ",")
	}
	if *tenant != "" {
		body["tenant"] = *tenant
	}
	if err := c.connect(); err != nil {
		return err
	}
	data, err := c.request("POST", "/api/v1/backtests", body)
	if err != nil {
		return err
	}
	if c.output != "table" {
		return c.printRaw(data)
	}
	type run struct {
		Rule     string
		Messages uint64
		Counts   struct {
			EventsIn     uint64 `json:"events_in"`
			Late         uint64
			Rejected     uint64
			Results      uint64
			HavingFailed uint64 `json:"having_failed"`
		}
	}
	var rep struct {
		Messages uint64
		Tenant   string
		Scenario string
		From, To string
		Took     string
		Run      run
		Compare  *run
		Diff     *struct {
			OnlyA   []any `json:"only_a"`
			OnlyB   []any `json:"only_b"`
			Changed []any
			Same    int
		}
	}
	if err := decodeAnswer(data, &rep); err != nil {
		return err
	}
	input := rep.From + " to " + rep.To
	if rep.Scenario != "" {
		input = "scenario " + rep.Scenario
	}
	fmt.Fprintf(c.stdout, "Backtest over %s, tenant %s: %d messages read in %s.\n\n", input, rep.Tenant, rep.Messages, rep.Took)
	n := strconv.FormatUint
	rows := [][]string{}
	for i, r := range []*run{&rep.Run, rep.Compare} {
		if r == nil {
			continue
		}
		rows = append(rows, []string{string(rune('A' + i)), r.Rule, n(r.Messages, 10), n(r.Counts.EventsIn, 10),
			n(r.Counts.Late, 10), n(r.Counts.Rejected, 10), n(r.Counts.HavingFailed, 10), n(r.Counts.Results, 10)})
	}
	if err := printTable(c.stdout, []string{"VERSION", "RULE", "MESSAGES", "EVENTS", "LATE", "REJECTED", "HAVING FAILED", "RESULTS"}, rows); err != nil {
		return err
	}
	if d := rep.Diff; d != nil {
		fmt.Fprintf(c.stdout, "\nOnly in A: %d, only in B: %d, changed: %d, the same: %d.\n", len(d.OnlyA), len(d.OnlyB), len(d.Changed), d.Same)
	}
	return nil
}
