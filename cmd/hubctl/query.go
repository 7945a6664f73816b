package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"time"
)

// point is one value of a telemetry answer.
type point struct {
	Time  time.Time `json:"time"`
	Value any       `json:"value"`
}

// query prints GET /api/v1/devices/{id}/telemetry as a table with a sparkline, CSV or JSON.
func (c *cli) query(args []string) error {
	fs := c.flags("query")
	from := fs.String("from", "-1h", "start: RFC 3339 or relative (-1h, -30m)")
	to := fs.String("to", "", "end: RFC 3339 or relative (default now)")
	every := fs.String("every", "", "window for downsampling, e.g. 1m (default: raw values)")
	agg := fs.String("agg", "", "mean, min, max, sum, count, first or last (default mean with --every)")
	noSpark := fs.Bool("no-spark", false, "no sparkline under the table")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usageErrorf("query: want <device> <field>")
	}
	if err := c.checkOutput("table", "csv", "json", "yaml"); err != nil {
		return err
	}
	if *agg != "" && *every == "" {
		return usageErrorf("query: --agg needs --every")
	}
	if *every != "" && *agg == "" {
		*agg = "mean"
	}
	if err := c.connect(); err != nil {
		return err
	}
	q := url.Values{"field": {pos[1]}, "from": {*from}}
	for k, v := range map[string]string{"to": *to, "every": *every, "agg": *agg} {
		if v != "" {
			q.Set(k, v)
		}
	}
	data, err := c.request("GET", "/api/v1/devices/"+url.PathEscape(pos[0])+"/telemetry?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	if c.output == "json" || c.output == "yaml" {
		return c.printRaw(data)
	}
	points, err := decodePoints(data)
	if err != nil {
		return err
	}
	rows := make([][]string, 0, len(points))
	var nums []float64
	for _, p := range points {
		rows = append(rows, []string{p.Time.UTC().Format(time.RFC3339Nano), formatValue(p.Value)})
		switch v := p.Value.(type) {
		case float64:
			nums = append(nums, v)
		case bool:
			nums = append(nums, map[bool]float64{false: 0, true: 1}[v])
		}
	}
	if err := c.print(nil, []string{"TIME", "VALUE"}, rows); err != nil {
		return err
	}
	if c.output == "table" && !*noSpark && len(nums) > 1 {
		lo, hi := nums[0], nums[0]
		for _, v := range nums {
			lo, hi = min(lo, v), max(hi, v)
		}
		fmt.Fprintf(c.stdout, "\n%s  min %s  max %s  (%d points)\n", sparkline(nums, 60), formatValue(lo), formatValue(hi), len(nums))
	}
	return nil
}

// decodePoints accepts {"points": [...]} or a bare array.
func decodePoints(data []byte) ([]point, error) {
	var wrapped struct {
		Points []point `json:"points"`
	}
	if err := json.Unmarshal(data, &wrapped); err == nil && wrapped.Points != nil {
		return wrapped.Points, nil
	}
	var bare []point
	if err := json.Unmarshal(data, &bare); err != nil {
		var empty struct{}
		if json.Unmarshal(data, &empty) == nil {
			return nil, nil // an object without points: no data
		}
		return nil, fmt.Errorf("the hub's answer is not what hubctl expects: %v", err)
	}
	return bare, nil
}

func formatValue(v any) string {
	switch x := v.(type) {
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case nil:
		return "-"
	case string:
		return x
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}
