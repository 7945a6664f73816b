package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// resource describes a collection of the API that hubctl passes through: rules, replays,
// simulations. Their shapes belong to their endpoints; hubctl shows what the hub answers.
type resource struct {
	name     string // "rules"
	path     string // "/api/v1/rules"
	singular string
	// sub are extra read-only views of one object: "stats" → GET {path}/{id}/stats.
	sub []string
	// jobs have progress: create --wait and watch poll it.
	jobs bool
	// controls are POST {path}/{id}/{op} verbs; "stop" maps to stopOp.
	controls []string
	stopOp   string
	// apply: "apply <name> -f FILE" replaces (or creates) one with PUT {path}/{name}.
	apply bool
}

var resources = map[string]resource{
	"rules": {name: "rules", path: "/api/v1/rules", singular: "rule", sub: []string{"stats", "results"}, apply: true},
	"replays": {name: "replay", path: "/api/v1/replays", singular: "replay", jobs: true,
		controls: []string{"pause", "resume", "cancel"}, stopOp: "cancel"},
	"simulations": {name: "sim", path: "/api/v1/simulations", singular: "simulation", jobs: true,
		controls: []string{"stop"}, stopOp: "stop"},
}

func (c *cli) resource(r resource, args []string) error {
	verbs := "list, get, create, delete"
	if r.apply {
		verbs += ", apply"
	}
	if r.jobs {
		verbs += ", watch, stop"
	}
	for _, op := range r.controls {
		if op != "stop" {
			verbs += ", " + op
		}
	}
	for _, s := range r.sub {
		verbs += ", " + s
	}
	if len(args) == 0 {
		return usageErrorf("%s: want %s", r.name, verbs)
	}
	verb, args := args[0], args[1:]
	asked := verb
	if verb == "run" && r.name == "sim" {
		verb = "create"
	}
	fs := c.flags(r.name + " " + verb)
	file := fs.String("f", "", "JSON or YAML file (- for stdin)")
	wait := fs.Bool("wait", false, "after create, follow progress until the job ends")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	one := func() (string, error) {
		if len(pos) != 1 {
			return "", usageErrorf("%s %s: want one %s name or ID", r.name, verb, r.singular)
		}
		return r.path + "/" + url.PathEscape(pos[0]), nil
	}
	if err := c.checkOutput("table", "json", "yaml"); err != nil {
		return err
	}
	switch verb {
	case "list", "ls", "get", "delete", "rm", "stop", "watch", "create":
	case "apply":
		if !r.apply {
			return usageErrorf("%s %s: unknown subcommand (want %s)", r.name, verb, verbs)
		}
	default:
		found := false
		for _, s := range append(r.sub, r.controls...) {
			found = found || s == verb
		}
		if !found {
			return usageErrorf("%s %s: unknown subcommand (want %s)", r.name, verb, verbs)
		}
	}
	if (verb == "stop" || verb == "watch") && !r.jobs {
		return usageErrorf("%s %s: unknown subcommand (want %s)", r.name, verb, verbs)
	}
	if (verb == "create" || verb == "apply") && *file == "" {
		return usageErrorf("%s %s: want -f FILE", r.name, asked)
	}
	if err := c.connect(); err != nil {
		return err
	}
	switch verb {
	case "list", "ls":
		if len(pos) > 0 {
			return usageErrorf("%s list: unexpected argument %q", r.name, pos[0])
		}
		data, err := c.request("GET", r.path, nil)
		if err != nil {
			return err
		}
		return c.printList(r, data)
	case "get":
		p, err := one()
		if err != nil {
			return err
		}
		data, err := c.request("GET", p, nil)
		if err != nil {
			return err
		}
		return c.printRaw(data)
	case "delete", "rm":
		p, err := one()
		if err != nil {
			return err
		}
		if _, err := c.request("DELETE", p, nil); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "%s %s deleted\n", r.singular, pos[0])
		return nil
	case "stop":
		verb = r.stopOp
		fallthrough
	case "pause", "resume", "cancel":
		p, err := one()
		if err != nil {
			return err
		}
		data, err := c.request("POST", p+"/"+verb, nil)
		if err != nil {
			return err
		}
		if c.output != "table" {
			return c.printRaw(data)
		}
		var job map[string]any
		_ = json.Unmarshal(data, &job)
		state := "ok"
		if v := firstOf(job, "status", "state"); v != nil {
			state = fmt.Sprint(v)
		}
		fmt.Fprintf(c.stdout, "%s %s: %s\n", r.singular, pos[0], state)
		return nil
	case "apply":
		p, err := one()
		if err != nil {
			return err
		}
		body, err := readBody(*file)
		if err != nil {
			return err
		}
		data, err := c.request("PUT", p, body)
		if err != nil {
			return err
		}
		return c.printRaw(data)
	case "watch":
		p, err := one()
		if err != nil {
			return err
		}
		return c.watch(r, p)
	case "create":
		body, err := readBody(*file)
		if err != nil {
			return err
		}
		data, err := c.request("POST", r.path, body)
		if err != nil {
			return err
		}
		if !*wait || !r.jobs {
			return c.printRaw(data)
		}
		var created map[string]any
		if err := decodeAnswer(data, &created); err != nil {
			return err
		}
		id := fmt.Sprint(firstOf(created, "id", "name"))
		if id == "" || id == "<nil>" {
			return c.printRaw(data)
		}
		fmt.Fprintf(c.stderr, "%s %s started\n", r.singular, id)
		return c.watch(r, r.path+"/"+url.PathEscape(id))
	default: // a sub view
		p, err := one()
		if err != nil {
			return err
		}
		data, err := c.request("GET", p+"/"+verb, nil)
		if err != nil {
			return err
		}
		return c.printRaw(data)
	}
}

// readBody reads a JSON or YAML file and returns it as JSON.
func readBody(path string) ([]byte, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, usageErrorf("-f: %v", err)
	}
	if json.Valid(data) {
		return data, nil
	}
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		return nil, usageErrorf("%s: neither JSON nor YAML: %v", path, err)
	}
	out, err := json.Marshal(v)
	if err != nil {
		return nil, usageErrorf("%s: %v", path, err)
	}
	return out, nil
}

func firstOf(m map[string]any, keys ...string) any {
	for _, k := range keys {
		if v, ok := m[k]; ok && v != nil && v != "" {
			return v
		}
	}
	return nil
}

// printList prints a list answer ([...] or {"<anything>": [...]}) as a table of the common
// columns, or as it is for json and yaml.
func (c *cli) printList(r resource, data []byte) error {
	if c.output != "table" {
		return c.printRaw(data)
	}
	var v any
	if err := decodeAnswer(data, &v); err != nil {
		return err
	}
	var items []any
	switch x := v.(type) {
	case []any:
		items = x
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if arr, ok := x[k].([]any); ok {
				items = arr
				break
			}
		}
	}
	if len(items) == 0 {
		fmt.Fprintf(c.stdout, "No %s.\n", r.path[strings.LastIndexByte(r.path, '/')+1:])
		return nil
	}
	cols := []struct {
		head string
		keys []string
	}{
		{"NAME", []string{"name", "id"}}, {"ID", []string{"id"}}, {"STATUS", []string{"status", "state"}},
		{"ENABLED", []string{"enabled"}}, {"PROGRESS", []string{"progress"}}, {"CREATED", []string{"created_at"}},
	}
	var header []string
	var use []int
	for i, col := range cols {
		for _, it := range items {
			m, _ := it.(map[string]any)
			if v := firstOf(m, col.keys...); v != nil && !(col.head == "ID" && firstOf(m, "name") == nil) {
				header = append(header, col.head)
				use = append(use, i)
				break
			}
		}
	}
	rows := make([][]string, 0, len(items))
	for _, it := range items {
		m, _ := it.(map[string]any)
		var row []string
		for _, i := range use {
			row = append(row, cell(firstOf(m, cols[i].keys...)))
		}
		rows = append(rows, row)
	}
	return printTable(c.stdout, header, rows)
}

func cell(v any) string {
	switch x := v.(type) {
	case nil:
		return "-"
	case string:
		return x
	case float64:
		return formatValue(x)
	case map[string]any:
		if f := progressFraction(x); f >= 0 {
			return fmt.Sprintf("%.0f%%", f*100)
		}
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// progressFraction reads progress as {"done","total"} (or sent/published), {"fraction"}, or a
// number (0..1, or a percentage above 1); -1 if unknown.
func progressFraction(v any) float64 {
	switch x := v.(type) {
	case float64:
		if x > 1 {
			return x / 100
		}
		return x
	case map[string]any:
		if f, ok := x["fraction"].(float64); ok {
			return f
		}
		total, _ := x["total"].(float64)
		done, ok := firstOf(x, "done", "sent", "published").(float64)
		if ok && total > 0 {
			return done / total
		}
	}
	return -1
}

// watch polls a job until it reaches a final state, drawing a progress bar on a terminal.
func (c *cli) watch(r resource, path string) error {
	bar := c.newProgress(r.singular)
	defer bar.finish()
	for {
		data, err := c.request("GET", path, nil)
		if err != nil {
			return err
		}
		var job map[string]any
		if err := decodeAnswer(data, &job); err != nil {
			return err
		}
		f := progressFraction(job["progress"])
		if f < 0 {
			f = progressFraction(job)
		}
		bar.set(0, 0, f)
		state := strings.ToLower(fmt.Sprint(firstOf(job, "status", "state")))
		switch state {
		case "done", "completed", "finished", "succeeded", "stopped", "cancelled", "canceled", "failed", "error":
			bar.set(1, 1, 1)
			bar.finish()
			bar.on = false
			if err := c.printRaw(data); err != nil {
				return err
			}
			if state == "failed" || state == "error" {
				return fmt.Errorf("%s %s", r.singular, state)
			}
			return nil
		}
		time.Sleep(500 * time.Millisecond)
	}
}
