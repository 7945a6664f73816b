package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// device is a device as the API shows it; fields the hub may not (yet) send are optional.
type device struct {
	ID         string            `json:"id"`
	Name       string            `json:"name,omitempty"`
	Type       string            `json:"type,omitempty"`
	Tags       map[string]string `json:"tags,omitempty"`
	Location   *location         `json:"location,omitempty"`
	Metadata   map[string]any    `json:"metadata,omitempty"`
	Status     string            `json:"status,omitempty"`
	LastSeen   *time.Time        `json:"last_seen,omitempty"`
	Protocol   string            `json:"protocol,omitempty"`
	RemoteAddr string            `json:"remote_addr,omitempty"`
	CreatedAt  time.Time         `json:"created_at"`
	UpdatedAt  time.Time         `json:"updated_at"`
	Token      string            `json:"token,omitempty"`
}

type location struct {
	Lat float64 `json:"lat"`
	Lon float64 `json:"lon"`
}

func (d device) tags() string {
	keys := make([]string, 0, len(d.Tags))
	for k := range d.Tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + d.Tags[k]
	}
	return orDash(strings.Join(keys, ","))
}

func (d device) where() string {
	if d.Location == nil {
		return "-"
	}
	return fmt.Sprintf("%.5f,%.5f", d.Location.Lat, d.Location.Lon)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (c *cli) devices(args []string) error {
	if len(args) == 0 {
		return usageErrorf("devices: want list, get, create, delete or rotate-token")
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "list", "ls":
		return c.devicesList(args)
	case "get":
		return c.devicesGet(args)
	case "create":
		return c.devicesCreate(args)
	case "delete", "rm":
		return c.devicesDelete(args)
	case "rotate-token":
		return c.devicesRotate(args)
	}
	return usageErrorf("devices %s: unknown subcommand (want list, get, create, delete or rotate-token)", sub)
}

// multiFlag collects a repeatable flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func (c *cli) devicesList(args []string) error {
	fs := c.flags("devices list")
	typ := fs.String("type", "", "device type")
	status := fs.String("status", "", "online or offline")
	q := fs.String("q", "", "free text over ID and name")
	limit := fs.Int("limit", 0, "at most this many devices (default: all)")
	var tags multiFlag
	fs.Var(&tags, "tag", "key:value (repeatable)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErrorf("devices list: unexpected argument %q", pos[0])
	}
	if err := c.checkOutput("table", "json", "yaml", "csv"); err != nil {
		return err
	}
	if err := c.connect(); err != nil {
		return err
	}
	v := url.Values{}
	for k, val := range map[string]string{"type": *typ, "status": *status, "q": *q} {
		if val != "" {
			v.Set(k, val)
		}
	}
	for _, t := range tags {
		v.Add("tag", t)
	}
	var all []device
	for {
		page := min(1000, *limit-len(all))
		if *limit == 0 {
			page = 1000
		}
		v.Set("limit", strconv.Itoa(page))
		var out struct {
			Devices []device `json:"devices"`
			Next    string   `json:"next"`
		}
		if err := c.getJSON("/api/v1/devices?"+v.Encode(), &out); err != nil {
			return err
		}
		all = append(all, out.Devices...)
		if out.Next == "" || (*limit > 0 && len(all) >= *limit) {
			break
		}
		v.Set("cursor", out.Next)
	}
	if all == nil {
		all = []device{}
	}
	rows := make([][]string, 0, len(all))
	for _, d := range all {
		rows = append(rows, []string{d.ID, orDash(d.Name), orDash(d.Type), orDash(d.Status), d.tags(), d.where(), seen(d.LastSeen)})
	}
	return c.print(all, []string{"ID", "NAME", "TYPE", "STATUS", "TAGS", "LOCATION", "LAST SEEN"}, rows)
}

func seen(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func (c *cli) devicesGet(args []string) error {
	fs := c.flags("devices get")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErrorf("devices get: want one device ID")
	}
	if err := c.checkOutput("table", "json", "yaml"); err != nil {
		return err
	}
	if err := c.connect(); err != nil {
		return err
	}
	var d device
	if err := c.getJSON("/api/v1/devices/"+url.PathEscape(pos[0]), &d); err != nil {
		return err
	}
	if c.output != "table" {
		return c.print(d, nil, nil)
	}
	w := c.stdout
	field := func(k, v string) { fmt.Fprintf(w, "%-12s %s\n", k+":", v) }
	field("ID", d.ID)
	field("Name", orDash(d.Name))
	field("Type", orDash(d.Type))
	field("Status", orDash(d.Status))
	field("Last seen", seen(d.LastSeen))
	field("Tags", d.tags())
	field("Location", d.where())
	if len(d.Metadata) > 0 {
		meta, _ := json.Marshal(d.Metadata)
		field("Metadata", string(meta))
	}
	field("Created", d.CreatedAt.UTC().Format(time.RFC3339))
	field("Updated", d.UpdatedAt.UTC().Format(time.RFC3339))
	return nil
}

func (c *cli) devicesCreate(args []string) error {
	fs := c.flags("devices create")
	file := fs.String("f", "", "JSON (one device or an array) or CSV file of devices; - for stdin")
	name := fs.String("name", "", "display name")
	typ := fs.String("type", "", "device type")
	lat := fs.Float64("lat", 0, "latitude")
	lon := fs.Float64("lon", 0, "longitude")
	meta := fs.String("metadata", "", "metadata as a JSON object")
	tenant := fs.String("tenant", "", "tenant owning the device (default: the key's, else default)")
	var tags multiFlag
	fs.Var(&tags, "tag", "key=value (repeatable)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := c.checkOutput("table", "json", "yaml", "csv"); err != nil {
		return err
	}
	var list []map[string]any
	switch {
	case *file != "" && len(pos) > 0:
		return usageErrorf("devices create: give an ID or -f, not both")
	case *file != "":
		if list, err = readDevices(*file); err != nil {
			return err
		}
	case len(pos) == 1:
		d := map[string]any{"id": pos[0]}
		if *name != "" {
			d["name"] = *name
		}
		if *typ != "" {
			d["type"] = *typ
		}
		if *tenant != "" {
			d["tenant"] = *tenant
		}
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if set["lat"] != set["lon"] {
			return usageErrorf("devices create: give both --lat and --lon")
		}
		if set["lat"] {
			d["location"] = location{Lat: *lat, Lon: *lon}
		}
		if len(tags) > 0 {
			m := map[string]string{}
			for _, t := range tags {
				k, v, ok := strings.Cut(t, "=")
				if !ok || k == "" {
					return usageErrorf("--tag %q: want key=value", t)
				}
				m[k] = v
			}
			d["tags"] = m
		}
		if *meta != "" {
			var m map[string]any
			if err := json.Unmarshal([]byte(*meta), &m); err != nil {
				return usageErrorf("--metadata: want a JSON object: %v", err)
			}
			d["metadata"] = m
		}
		list = []map[string]any{d}
	default:
		return usageErrorf("devices create: want one device ID, or -f FILE")
	}
	if err := c.connect(); err != nil {
		return err
	}
	bar := c.newProgress("creating devices")
	created := []device{}
	var failed []string
	var lastErr error
	for i, d := range list {
		data, err := c.request("POST", "/api/v1/devices", d)
		bar.set(i+1, len(list), 0)
		if err != nil {
			if len(list) == 1 {
				return err
			}
			failed = append(failed, fmt.Sprintf("%v: %v", d["id"], err))
			lastErr = err
			continue
		}
		var out device
		if err := decodeAnswer(data, &out); err != nil {
			return err
		}
		created = append(created, out)
	}
	if len(list) > 1 {
		bar.finish()
	}
	rows := make([][]string, 0, len(created))
	for _, d := range created {
		rows = append(rows, []string{d.ID, d.Token})
	}
	var v any = created
	if len(list) == 1 && len(created) == 1 {
		v = created[0]
	}
	if err := c.print(v, []string{"ID", "TOKEN"}, rows); err != nil {
		return err
	}
	if c.output == "table" && len(created) > 0 {
		fmt.Fprintln(c.stderr, "Keep the tokens: the hub stores only their hashes and cannot show them again.")
	}
	for _, f := range failed {
		fmt.Fprintf(c.stderr, "hubctl: not created: %s\n", f)
	}
	if len(failed) > 0 {
		return &apiError{method: "POST", path: "/api/v1/devices", status: statusOf(lastErr),
			msg: fmt.Sprintf("%d of %d devices not created", len(failed), len(list))}
	}
	return nil
}

func statusOf(err error) int {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.status
	}
	return 500
}

// readDevices reads a JSON object, a JSON array of objects, or CSV with a header of id, name,
// type, lat, lon and tags ("k=v;k2=v2").
func readDevices(path string) ([]map[string]any, error) {
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
	trimmed := bytes.TrimSpace(data)
	if strings.EqualFold(filepath.Ext(path), ".csv") || len(trimmed) > 0 && trimmed[0] != '{' && trimmed[0] != '[' {
		return readDevicesCSV(path, data)
	}
	var list []map[string]any
	if len(trimmed) > 0 && trimmed[0] == '{' {
		var one map[string]any
		err = json.Unmarshal(trimmed, &one)
		list = []map[string]any{one}
	} else {
		err = json.Unmarshal(trimmed, &list)
	}
	if err != nil {
		return nil, usageErrorf("%s: not a JSON device or array of devices: %v", path, err)
	}
	return list, nil
}

func readDevicesCSV(path string, data []byte) ([]map[string]any, error) {
	r := csv.NewReader(bytes.NewReader(data))
	recs, err := r.ReadAll()
	if err != nil {
		return nil, usageErrorf("%s: %v", path, err)
	}
	if len(recs) < 2 {
		return nil, usageErrorf("%s: want a header line (id,name,type,lat,lon,tags) and at least one device", path)
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[strings.ToLower(strings.TrimSpace(h))] = i
	}
	if _, ok := col["id"]; !ok {
		return nil, usageErrorf("%s: the header has no id column", path)
	}
	get := func(rec []string, k string) string {
		if i, ok := col[k]; ok && i < len(rec) {
			return strings.TrimSpace(rec[i])
		}
		return ""
	}
	var list []map[string]any
	for n, rec := range recs[1:] {
		d := map[string]any{"id": get(rec, "id")}
		for _, k := range []string{"name", "type"} {
			if v := get(rec, k); v != "" {
				d[k] = v
			}
		}
		if la, lo := get(rec, "lat"), get(rec, "lon"); la != "" || lo != "" {
			lat, err1 := strconv.ParseFloat(la, 64)
			lon, err2 := strconv.ParseFloat(lo, 64)
			if err1 != nil || err2 != nil {
				return nil, usageErrorf("%s line %d: lat and lon must be numbers", path, n+2)
			}
			d["location"] = location{Lat: lat, Lon: lon}
		}
		if t := get(rec, "tags"); t != "" {
			m := map[string]string{}
			for _, kv := range strings.Split(t, ";") {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return nil, usageErrorf("%s line %d: tags: want k=v;k2=v2, got %q", path, n+2, t)
				}
				m[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
			d["tags"] = m
		}
		list = append(list, d)
	}
	return list, nil
}

func (c *cli) devicesDelete(args []string) error {
	fs := c.flags("devices delete")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usageErrorf("devices delete: want one or more device IDs")
	}
	if err := c.connect(); err != nil {
		return err
	}
	for _, id := range pos {
		if _, err := c.request("DELETE", "/api/v1/devices/"+url.PathEscape(id), nil); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "device %s deleted\n", id)
	}
	return nil
}

func (c *cli) devicesRotate(args []string) error {
	fs := c.flags("devices rotate-token")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErrorf("devices rotate-token: want one device ID")
	}
	if err := c.checkOutput("table", "json", "yaml"); err != nil {
		return err
	}
	if err := c.connect(); err != nil {
		return err
	}
	data, err := c.request("POST", "/api/v1/devices/"+url.PathEscape(pos[0])+"/token", nil)
	if err != nil {
		return err
	}
	var out struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	if err := decodeAnswer(data, &out); err != nil {
		return err
	}
	return c.print(out, []string{"ID", "TOKEN"}, [][]string{{out.ID, out.Token}})
}
