package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"gopkg.in/yaml.v3"
)

func printTable(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func printCSV(w io.Writer, header []string, rows [][]string) error {
	cw := csv.NewWriter(w)
	cw.Write(header)
	cw.WriteAll(rows)
	return cw.Error()
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// printYAML prints v as YAML by way of JSON, so field names are the API's.
func printYAML(w io.Writer, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var generic any
	if err := json.Unmarshal(data, &generic); err != nil {
		return err
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(generic); err != nil {
		return err
	}
	return enc.Close()
}

// printRaw prints an API answer as it is (json) or as YAML.
func (c *cli) printRaw(data []byte) error {
	var v any
	if err := decodeAnswer(data, &v); err != nil {
		return err
	}
	if c.output == "yaml" || c.output == "table" {
		return printYAML(c.stdout, v)
	}
	return printJSON(c.stdout, v)
}

// print writes rows in the chosen format; v is what json and yaml show.
func (c *cli) print(v any, header []string, rows [][]string) error {
	switch c.output {
	case "json":
		return printJSON(c.stdout, v)
	case "yaml":
		return printYAML(c.stdout, v)
	case "csv":
		return printCSV(c.stdout, header, rows)
	default:
		return printTable(c.stdout, header, rows)
	}
}

var sparks = []rune("▁▂▃▄▅▆▇█")

// sparkline draws values in at most width characters (averaging buckets when there are more).
func sparkline(values []float64, width int) string {
	if len(values) == 0 {
		return ""
	}
	if len(values) > width {
		buckets := make([]float64, width)
		for i := range buckets {
			lo, hi := i*len(values)/width, (i+1)*len(values)/width
			sum := 0.0
			for _, v := range values[lo:hi] {
				sum += v
			}
			buckets[i] = sum / float64(hi-lo)
		}
		values = buckets
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range values {
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	var b strings.Builder
	for _, v := range values {
		i := (len(sparks) - 1) / 2
		if hi > lo {
			i = int((v - lo) / (hi - lo) * float64(len(sparks)-1))
		}
		b.WriteRune(sparks[i])
	}
	return b.String()
}

// isTerminal reports whether f is a character device (a terminal, not a pipe or file).
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// stderrIsTTY reports whether progress bars may be drawn on w; tests replace it.
var stderrIsTTY = func(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isTerminal(f)
}

func (c *cli) tty() bool { return stderrIsTTY(c.stderr) }

// progress draws a bar on stderr when it is a terminal, and nothing otherwise.
type progress struct {
	w     io.Writer
	on    bool
	label string
	start time.Time
	last  time.Time
}

func (c *cli) newProgress(label string) *progress {
	return &progress{w: c.stderr, on: c.tty(), label: label, start: time.Now()}
}

// set shows done of total (total 0: unknown); fraction overrides when total is 0 and it is >= 0.
func (p *progress) set(done, total int, fraction float64) {
	if !p.on || time.Since(p.last) < 100*time.Millisecond && (total == 0 || done < total) {
		return
	}
	p.last = time.Now()
	if total > 0 {
		fraction = float64(done) / float64(total)
	}
	const width = 30
	fraction = math.Max(0, math.Min(1, fraction))
	n := int(fraction * width)
	bar := strings.Repeat("█", n) + strings.Repeat("░", width-n)
	count := ""
	if total > 0 {
		count = fmt.Sprintf(" %d/%d", done, total)
	}
	fmt.Fprintf(p.w, "\r%s %s %3.0f%%%s  %s ", p.label, bar, fraction*100, count, time.Since(p.start).Round(time.Second))
}

func (p *progress) finish() {
	if p.on {
		fmt.Fprintln(p.w)
	}
}
