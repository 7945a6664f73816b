package main

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// canaryResource is /api/v1/canaries for create, get and delete; list and results have tables
// of their own (verdicts, scores, per-metric classes).
var canaryResource = resource{name: "canary", path: "/api/v1/canaries", singular: "canary", apply: true}

const canaryVerbs = "list, get, create, apply, results, delete"

// canaries runs hubctl canary list|get|create|results|delete.
func (c *cli) canaries(args []string) error {
	if len(args) == 0 {
		return usageErrorf("canary: want %s", canaryVerbs)
	}
	switch args[0] {
	case "list", "ls":
		return c.canaryList(args[1:])
	case "results":
		return c.canaryResults(args[1:])
	case "get", "create", "apply", "delete", "rm":
		return c.resource(canaryResource, args)
	}
	return usageErrorf("canary %s: unknown subcommand (want %s)", args[0], canaryVerbs)
}

type canaryAnswer struct {
	Name         string         `json:"name"`
	Interval     string         `json:"interval"`
	Enabled      *bool          `json:"enabled"`
	CanaryGroup  map[string]any `json:"canary_group"`
	ControlGroup map[string]any `json:"control_group"`
	Latest       *struct {
		WindowEnd string         `json:"window_end"`
		Values    map[string]any `json:"values"`
	} `json:"latest"`
}

func (c *cli) canaryList(args []string) error {
	fs := c.flags("canary list")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErrorf("canary list: unexpected argument %q", pos[0])
	}
	if err := c.checkOutput("table", "json", "yaml", "csv"); err != nil {
		return err
	}
	if err := c.connect(); err != nil {
		return err
	}
	data, err := c.request("GET", canaryResource.path, nil)
	if err != nil {
		return err
	}
	if c.output == "json" || c.output == "yaml" {
		return c.printRaw(data)
	}
	var ans struct{ Canaries []canaryAnswer }
	if err := decodeAnswer(data, &ans); err != nil {
		return err
	}
	if len(ans.Canaries) == 0 && c.output == "table" {
		fmt.Fprintln(c.stdout, "No canaries.")
		return nil
	}
	header := []string{"NAME", "VERDICT", "SCORE", "LAST", "INTERVAL", "CANARY", "CONTROL", "ENABLED"}
	rows := make([][]string, 0, len(ans.Canaries))
	for _, a := range ans.Canaries {
		verdict, score, last := "-", "-", "-"
		if a.Latest != nil {
			verdict = formatValue(a.Latest.Values["verdict"])
			if s, ok := a.Latest.Values["verdict_score"].(float64); ok && a.Latest.Values["verdict"] != "inconclusive" {
				score = strconv.FormatFloat(s, 'f', 2, 64)
			}
			last = formatValue(a.Latest.Values["status"])
		}
		enabled := "true"
		if a.Enabled != nil && !*a.Enabled {
			enabled = "false"
		}
		rows = append(rows, []string{a.Name, verdict, score, last, a.Interval, selector(a.CanaryGroup), selector(a.ControlGroup), enabled})
	}
	return c.print(nil, header, rows)
}

// selector renders a group: "fw:2.1", "type=gw fw:2.1" or "3 devices".
func selector(g map[string]any) string {
	if ids, ok := g["devices"].([]any); ok && len(ids) > 0 {
		if len(ids) <= 3 {
			s := make([]string, len(ids))
			for i, id := range ids {
				s[i] = fmt.Sprint(id)
			}
			return strings.Join(s, ",")
		}
		return fmt.Sprintf("%d devices", len(ids))
	}
	var parts []string
	if t, ok := g["type"].(string); ok && t != "" {
		parts = append(parts, "type="+t)
	}
	if tags, ok := g["tags"].([]any); ok {
		for _, t := range tags {
			parts = append(parts, fmt.Sprint(t))
		}
	}
	return strings.Join(parts, " ")
}

func (c *cli) canaryResults(args []string) error {
	fs := c.flags("canary results")
	since := fs.String("since", "", "from this window end: RFC 3339, Unix ms or -1h")
	limit := fs.Int("limit", 0, "at most this many intervals")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErrorf("canary results: want one canary name")
	}
	if err := c.checkOutput("table", "json", "yaml", "csv"); err != nil {
		return err
	}
	if err := c.connect(); err != nil {
		return err
	}
	q := url.Values{}
	if *since != "" {
		q.Set("since", *since)
	}
	if *limit > 0 {
		q.Set("limit", strconv.Itoa(*limit))
	}
	p := canaryResource.path + "/" + url.PathEscape(pos[0]) + "/results"
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	data, err := c.request("GET", p, nil)
	if err != nil {
		return err
	}
	if c.output == "json" || c.output == "yaml" {
		return c.printRaw(data)
	}
	var ans struct {
		Results []struct {
			WindowStart string         `json:"window_start"`
			WindowEnd   string         `json:"window_end"`
			Values      map[string]any `json:"values"`
		}
	}
	if err := decodeAnswer(data, &ans); err != nil {
		return err
	}
	if len(ans.Results) == 0 && c.output == "table" {
		fmt.Fprintln(c.stdout, "No results.")
		return nil
	}
	// One column per metric, in the canary's order: its class in each interval.
	var fields []string
	seen := map[string]bool{}
	for _, r := range ans.Results {
		ms, _ := r.Values["metrics"].([]any)
		for _, m := range ms {
			f, _ := m.(map[string]any)["field"].(string)
			if f != "" && !seen[f] {
				seen[f] = true
				fields = append(fields, f)
			}
		}
	}
	header := append([]string{"WINDOW START", "WINDOW END", "STATUS", "SCORE", "VERDICT"}, upper(fields)...)
	header = append(header, "DEVICES", "WARNINGS")
	rows := make([][]string, 0, len(ans.Results))
	for _, r := range ans.Results {
		v := r.Values
		row := []string{r.WindowStart, r.WindowEnd, formatValue(v["status"]), formatValue(v["score"]), formatValue(v["verdict"])}
		for _, f := range fields {
			row = append(row, formatValue(v[f+".class"]))
		}
		row = append(row, formatValue(v["canary_devices"])+"/"+formatValue(v["control_devices"]))
		var warns []string
		if ws, ok := v["warnings"].([]any); ok {
			for _, w := range ws {
				warns = append(warns, fmt.Sprint(w))
			}
		}
		row = append(row, cellOrDash(strings.Join(warns, "; ")))
		rows = append(rows, row)
	}
	return c.print(nil, header, rows)
}

func upper(s []string) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = strings.ToUpper(x)
	}
	return out
}

func cellOrDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
