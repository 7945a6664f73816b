package fleet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tributary-iot/tributary/simulator"
)

// Definition is a fleet file: profiles of virtual devices with their traffic and faults.
type Definition struct {
	// Name prefixes device IDs (with the profile name) and names the simulation.
	Name string `yaml:"name" json:"name"`
	// Seed makes the run reproducible: the same seed gives the same device parameters, values,
	// fault schedule and anomaly devices. Unset: a random seed, reported in the simulation.
	Seed *int64 `yaml:"seed" json:"seed,omitempty"`
	// Duration of the run after every device is connected; 0 runs until stopped.
	Duration simulator.Duration `yaml:"duration" json:"duration,omitempty"`
	// ConnectRate is how many devices connect per second while starting (default 1000).
	ConnectRate float64   `yaml:"connect_rate" json:"connect_rate,omitempty"`
	Profiles    []Profile `yaml:"profiles" json:"profiles"`
}

// Profile is a group of alike devices.
type Profile struct {
	Name    string `yaml:"name" json:"name"`
	Devices int    `yaml:"devices" json:"devices"`
	// IDPrefix makes device IDs "<prefix>-0001"...; default "<fleet>-<profile>".
	IDPrefix string `yaml:"id_prefix" json:"id_prefix,omitempty"`
	// Type is the device type in the registry (default: the profile name).
	Type string `yaml:"type" json:"type,omitempty"`
	// Protocol is "mqtt" (3.1.1, QoS 0 or 1) or "coap" (UDP, confirmable or not).
	Protocol    string `yaml:"protocol" json:"protocol"`
	QoS         int    `yaml:"qos" json:"qos,omitempty"`
	Confirmable *bool  `yaml:"confirmable" json:"confirmable,omitempty"`
	// Rate is the messages each device sends: "2/s", "30/m", "1/h" or a number per second.
	Rate Rate `yaml:"rate" json:"rate"`
	// Timestamps puts the device's time in each message as "ts" (Unix ms); default true. Clock
	// skew, late and out-of-order sends only show in event times with timestamps.
	Timestamps *bool             `yaml:"timestamps" json:"timestamps,omitempty"`
	Fields     map[string]Signal `yaml:"fields" json:"fields"`
	// ClockSkew offsets each device's clock by a fixed amount drawn from [-skew, +skew].
	ClockSkew simulator.Duration `yaml:"clock_skew" json:"clock_skew,omitempty"`
	// OutOfOrder is the fraction of messages held back and sent after the next one.
	OutOfOrder  float64     `yaml:"out_of_order" json:"out_of_order,omitempty"`
	Late        Late        `yaml:"late" json:"late,omitzero"`
	Disconnects Disconnects `yaml:"disconnects" json:"disconnects,omitzero"`
	Bursts      Bursts      `yaml:"bursts" json:"bursts,omitzero"`
	Anomalies   []Anomaly   `yaml:"anomalies" json:"anomalies,omitempty"`
}

// Signal models one field's values.
type Signal struct {
	// Model is constant (value), sine (mean, amplitude, period), random_walk (start, step, min,
	// max), step (values, every: the value changes every interval) or sequence (values: one per
	// message, cycling).
	Model     string             `yaml:"model" json:"model"`
	Value     any                `yaml:"value" json:"value,omitempty"`
	Mean      float64            `yaml:"mean" json:"mean,omitempty"`
	Amplitude float64            `yaml:"amplitude" json:"amplitude,omitempty"`
	Period    simulator.Duration `yaml:"period" json:"period,omitempty"`
	Start     float64            `yaml:"start" json:"start,omitempty"`
	Step      float64            `yaml:"step" json:"step,omitempty"`
	Min       *float64           `yaml:"min" json:"min,omitempty"`
	Max       *float64           `yaml:"max" json:"max,omitempty"`
	Values    []any              `yaml:"values" json:"values,omitempty"`
	Every     simulator.Duration `yaml:"every" json:"every,omitempty"`
	// Noise adds Gaussian noise with this standard deviation to numeric values.
	Noise float64 `yaml:"noise" json:"noise,omitempty"`
	// Decimals rounds numeric values (default 3).
	Decimals *int `yaml:"decimals" json:"decimals,omitempty"`
}

// Late sends a fraction of messages after a delay, with their original timestamp.
type Late struct {
	Fraction float64            `yaml:"fraction" json:"fraction,omitempty"`
	Delay    simulator.Duration `yaml:"delay" json:"delay,omitempty"`
}

// Disconnects make devices drop their connection about every Every (exponentially distributed)
// and reconnect after Downtime; messages due while disconnected are lost.
type Disconnects struct {
	Every    simulator.Duration `yaml:"every" json:"every,omitempty"`
	Downtime simulator.Duration `yaml:"downtime" json:"downtime,omitempty"`
}

// Bursts make devices send Count extra messages at once about every Every.
type Bursts struct {
	Every simulator.Duration `yaml:"every" json:"every,omitempty"`
	Count int                `yaml:"count" json:"count,omitempty"`
}

// Anomaly kinds.
const (
	Spike   = "spike"   // value + magnitude during the window
	Drift   = "drift"   // value + magnitude × (elapsed / duration): a ramp over the window
	Stuck   = "stuck"   // the value stays at the last one sent before the window
	Dropout = "dropout" // the device sends nothing during the window
)

// Anomaly is a fault injected into some devices of a profile at a chosen time.
type Anomaly struct {
	Kind  string `yaml:"kind" json:"kind"`
	Field string `yaml:"field" json:"field,omitempty"`
	// At is the offset from the start of the run; Duration the window's length (default: one
	// message interval).
	At        simulator.Duration `yaml:"at" json:"at"`
	Duration  simulator.Duration `yaml:"duration" json:"duration,omitempty"`
	Magnitude float64            `yaml:"magnitude" json:"magnitude,omitempty"`
	// Devices is how many devices of the profile get it: a number or a percentage ("10%");
	// default 1. Which ones follows from the seed.
	Devices Count `yaml:"devices" json:"devices,omitzero"`
}

// Rate is messages per second.
type Rate float64

var rateRE = regexp.MustCompile(`^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*/\s*(ms|s|m|h|sec|min|hour)\s*$`)

func parseRate(s string) (Rate, error) {
	if f, err := strconv.ParseFloat(strings.TrimSpace(s), 64); err == nil {
		return Rate(f), nil
	}
	m := rateRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a rate like \"2/s\", \"30/m\", \"1/h\" or a number per second", s)
	}
	f, _ := strconv.ParseFloat(m[1], 64)
	per := map[string]float64{"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600}[m[2]]
	return Rate(f / per), nil
}

// UnmarshalYAML reads "2/s", "30/m", "1/h" or a number per second.
func (r *Rate) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a rate like \"2/s\"", n.Line)
	}
	v, err := parseRate(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	*r = v
	return nil
}

// MarshalJSON writes messages per second.
func (r Rate) MarshalJSON() ([]byte, error) { return json.Marshal(float64(r)) }

// UnmarshalJSON reads what UnmarshalYAML does.
func (r *Rate) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) != nil {
		s = string(b)
	}
	v, err := parseRate(s)
	*r = v
	return err
}

// Interval is the time between two messages of one device.
func (r Rate) Interval() time.Duration { return time.Duration(float64(time.Second) / float64(r)) }

// Count is a number of devices or a percentage of a profile's devices.
type Count struct {
	N       int
	Percent float64
}

// IsZero reports whether the count is unset.
func (c Count) IsZero() bool { return c.N == 0 && c.Percent == 0 }

func parseCount(s string) (Count, error) {
	s = strings.TrimSpace(s)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil {
			return Count{}, fmt.Errorf("%q is not a percentage", s)
		}
		return Count{Percent: f}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return Count{}, fmt.Errorf("%q is not a number of devices or a percentage like \"10%%\"", s)
	}
	return Count{N: n}, nil
}

// UnmarshalYAML reads 3 or "10%".
func (c *Count) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a number of devices or a percentage", n.Line)
	}
	v, err := parseCount(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	*c = v
	return nil
}

// MarshalJSON writes 3 or "10%".
func (c Count) MarshalJSON() ([]byte, error) {
	if c.Percent != 0 {
		return json.Marshal(strconv.FormatFloat(c.Percent, 'g', -1, 64) + "%")
	}
	return json.Marshal(c.N)
}

// UnmarshalJSON reads 3 or "10%".
func (c *Count) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) != nil {
		s = string(b)
	}
	v, err := parseCount(s)
	*c = v
	return err
}

// of resolves the count against a profile of n devices.
func (c Count) of(n int) int {
	if c.IsZero() {
		return 1
	}
	if c.Percent != 0 {
		return max(1, int(math.Round(c.Percent/100*float64(n))))
	}
	return c.N
}

// Limits of a definition.
const (
	MaxProfiles      = 100
	MaxDevicesTotal  = 200000
	MaxFields        = 100
	MaxRate          = 1000 // per device per second
	MaxAnomalies     = 1000
	MaxDuration      = 30 * 24 * time.Hour
	maxFleetName     = 32
	defaultDecimals  = 3
	maxBurst         = 1000
	defaultConnectPS = 1000
)

// Parse reads a fleet definition. format is "yaml" or "json" (JSON is read as the YAML it is,
// so errors name lines either way). Errors wrap simulator.ErrInvalid and name the line and the
// field: "line 12: profiles[0].rate: must be positive".
func Parse(data []byte, format string) (Definition, error) {
	if format == "json" {
		var v any
		if err := json.Unmarshal(data, &v); err != nil {
			var syn *json.SyntaxError
			if errors.As(err, &syn) {
				line, col := position(data, syn.Offset)
				return Definition{}, fmt.Errorf("%w: line %d, column %d: invalid JSON: %v", simulator.ErrInvalid, line, col, err)
			}
			if len(bytes.TrimSpace(data)) > 0 {
				return Definition{}, fmt.Errorf("%w: invalid JSON: %v", simulator.ErrInvalid, err)
			}
		}
		// Tabs are only white space in valid JSON, and YAML does not indent with them.
		data = bytes.ReplaceAll(data, []byte("\t"), []byte(" "))
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return Definition{}, fmt.Errorf("%w: %s", simulator.ErrInvalid, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(root.Content) == 0 {
		return Definition{}, fmt.Errorf("%w: the fleet definition is empty", simulator.ErrInvalid)
	}
	if root.Content[0].Kind != yaml.MappingNode {
		return Definition{}, fmt.Errorf("%w: line %d: the fleet definition must be a mapping with name and profiles", simulator.ErrInvalid, root.Content[0].Line)
	}
	lines := map[string]int{}
	keyLines(root.Content[0], "", lines)
	// Errors from decoding name a line only: use the path of the key there, or for a flow
	// mapping with several keys on the line, the path they share.
	byLine := map[int]string{}
	for p, l := range lines {
		cur, ok := byLine[l]
		if !ok {
			byLine[l] = p
			continue
		}
		byLine[l] = commonPath(cur, p)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var def Definition
	if err := dec.Decode(&def); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			msgs := make([]string, 0, len(te.Errors))
			for _, e := range te.Errors {
				msgs = append(msgs, annotate(e, byLine))
			}
			return Definition{}, fmt.Errorf("%w: %s", simulator.ErrInvalid, strings.Join(msgs, "; "))
		}
		return Definition{}, fmt.Errorf("%w: %s", simulator.ErrInvalid, annotate(strings.TrimPrefix(err.Error(), "yaml: "), byLine))
	}
	v := validator{lines: lines}
	def.validate(&v)
	if v.err != nil {
		return Definition{}, v.err
	}
	return def, nil
}

// position is the line and column (from 1) of byte offset off, where json.SyntaxError.Offset
// counts the bytes read up to and including the bad one.
func position(data []byte, off int64) (line, col int) {
	off = max(0, min(off-1, int64(len(data))))
	line = 1 + bytes.Count(data[:off], []byte("\n"))
	col = int(off) - bytes.LastIndexByte(data[:off], '\n')
	return line, col
}

// commonPath is the longest path both a and b lie under ("a.b.c", "a.b.d" → "a.b").
func commonPath(a, b string) string {
	if strings.HasPrefix(b, a) && (len(b) == len(a) || b[len(a)] == '.' || b[len(a)] == '[') {
		return a
	}
	if strings.HasPrefix(a, b) && (len(a) == len(b) || a[len(b)] == '.' || a[len(b)] == '[') {
		return b
	}
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	p := a[:i]
	if j := strings.LastIndexAny(p, ".["); j >= 0 {
		return p[:j]
	}
	return ""
}

var unknownFieldRE = regexp.MustCompile(`^field (\S+) not found in type \S+$`)

var lineRE = regexp.MustCompile(`^line (\d+): `)

// annotate adds the field path to a yaml error "line N: ...".
func annotate(msg string, byLine map[int]string) string {
	m := lineRE.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	n, _ := strconv.Atoi(m[1])
	p, ok := byLine[n]
	if !ok || p == "" {
		return msg
	}
	rest := strings.TrimPrefix(msg, m[0])
	if f := unknownFieldRE.FindStringSubmatch(rest); f != nil {
		rest = "unknown field " + f[1]
	}
	return fmt.Sprintf("line %d: %s: %s", n, p, rest)
}

// keyLines records the line of every key and sequence item, by path.
func keyLines(n *yaml.Node, path string, out map[string]int) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			out[p] = k.Line
			keyLines(n.Content[i+1], p, out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			out[p] = c.Line
			keyLines(c, p, out)
		}
	}
}

// validator collects the first error, naming the line of the field or of its closest parent.
type validator struct {
	lines map[string]int
	err   error
}

func (v *validator) failf(path, format string, args ...any) {
	if v.err != nil {
		return
	}
	msg := fmt.Sprintf(format, args...)
	for p := path; p != ""; {
		if l, ok := v.lines[p]; ok {
			v.err = fmt.Errorf("%w: line %d: %s: %s", simulator.ErrInvalid, l, path, msg)
			return
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	v.err = fmt.Errorf("%w: %s: %s", simulator.ErrInvalid, path, msg)
}

func (v *validator) has(path string) bool { _, ok := v.lines[path]; return ok }

func (d *Definition) validate(v *validator) {
	switch {
	case d.Name == "":
		v.failf("name", "required")
	case !simulator.ValidName(d.Name) || len(d.Name) > maxFleetName:
		v.failf("name", "%q: use 1 to %d letters, digits, '-' or '_', starting with a letter or digit", d.Name, maxFleetName)
	case d.Duration < 0 || d.Duration.D() > MaxDuration:
		v.failf("duration", "%s out of range 0 to %s", d.Duration.D(), MaxDuration)
	case d.ConnectRate < 0:
		v.failf("connect_rate", "must not be negative")
	case len(d.Profiles) == 0:
		v.failf("profiles", "at least one profile is required")
	case len(d.Profiles) > MaxProfiles:
		v.failf("profiles", "%d profiles, at most %d", len(d.Profiles), MaxProfiles)
	}
	total := 0
	names, prefixes := map[string]bool{}, map[string]string{}
	for i := range d.Profiles {
		p := &d.Profiles[i]
		path := fmt.Sprintf("profiles[%d]", i)
		p.validate(v, path, d)
		if names[p.Name] {
			v.failf(path+".name", "%q is used by another profile", p.Name)
		}
		names[p.Name] = true
		if other, ok := prefixes[p.idPrefix(d.Name)]; ok {
			v.failf(path+".id_prefix", "%q is also the ID prefix of profile %s", p.idPrefix(d.Name), other)
		}
		prefixes[p.idPrefix(d.Name)] = p.Name
		total += p.Devices
	}
	if total > MaxDevicesTotal {
		v.failf("profiles", "%d devices in all, at most %d", total, MaxDevicesTotal)
	}
}

func (p *Profile) idPrefix(fleet string) string {
	if p.IDPrefix != "" {
		return p.IDPrefix
	}
	return fleet + "-" + p.Name
}

func (p *Profile) validate(v *validator, path string, d *Definition) {
	switch {
	case p.Name == "":
		v.failf(path+".name", "required")
	case !simulator.ValidName(p.Name):
		v.failf(path+".name", "%q: use letters, digits, '-' or '_', starting with a letter or digit", p.Name)
	case p.Devices < 1:
		v.failf(path+".devices", "must be at least 1, got %d", p.Devices)
	case p.IDPrefix != "" && !simulator.ValidName(p.IDPrefix):
		v.failf(path+".id_prefix", "%q: use letters, digits, '-' or '_', starting with a letter or digit", p.IDPrefix)
	case len(p.idPrefix(d.Name))+1+idDigits(p.Devices) > 64:
		v.failf(path+".id_prefix", "device IDs %q would be longer than 64 characters", p.idPrefix(d.Name)+"-"+strings.Repeat("0", idDigits(p.Devices)))
	case len(p.Type) > 64:
		v.failf(path+".type", "longer than 64 bytes")
	case p.Protocol != "mqtt" && p.Protocol != "coap":
		v.failf(path+".protocol", "got %q, want mqtt or coap", p.Protocol)
	case p.Protocol == "mqtt" && p.QoS != 0 && p.QoS != 1:
		v.failf(path+".qos", "got %d, want 0 or 1", p.QoS)
	case p.Protocol == "coap" && v.has(path+".qos"):
		v.failf(path+".qos", "applies to mqtt only (use confirmable for coap)")
	case p.Protocol == "mqtt" && p.Confirmable != nil:
		v.failf(path+".confirmable", "applies to coap only (use qos for mqtt)")
	case !v.has(path + ".rate"):
		v.failf(path+".rate", "required, e.g. \"1/s\"")
	case !(p.Rate > 0) || p.Rate > MaxRate:
		v.failf(path+".rate", "%g messages/s per device out of range: want more than 0, at most %d", float64(p.Rate), MaxRate)
	case len(p.Fields) == 0:
		v.failf(path+".fields", "at least one field is required")
	case len(p.Fields) > MaxFields:
		v.failf(path+".fields", "%d fields, at most %d", len(p.Fields), MaxFields)
	case p.ClockSkew < 0 || p.ClockSkew.D() > 24*time.Hour:
		v.failf(path+".clock_skew", "%s out of range 0 to 24h", p.ClockSkew.D())
	case p.OutOfOrder < 0 || p.OutOfOrder > 1:
		v.failf(path+".out_of_order", "%g is not a fraction from 0 to 1", p.OutOfOrder)
	case p.Late.Fraction < 0 || p.Late.Fraction > 1:
		v.failf(path+".late.fraction", "%g is not a fraction from 0 to 1", p.Late.Fraction)
	case p.Late.Fraction > 0 && (p.Late.Delay <= 0 || p.Late.Delay.D() > 24*time.Hour):
		v.failf(path+".late.delay", "want a duration from 1ms to 24h with late.fraction set")
	case p.Disconnects != (Disconnects{}) && (p.Disconnects.Every <= 0 || p.Disconnects.Downtime <= 0):
		v.failf(path+".disconnects", "every and downtime must both be positive")
	case p.Bursts != (Bursts{}) && (p.Bursts.Every <= 0 || p.Bursts.Count < 1 || p.Bursts.Count > maxBurst):
		v.failf(path+".bursts", "every must be positive and count from 1 to %d", maxBurst)
	case len(p.Anomalies) > MaxAnomalies:
		v.failf(path+".anomalies", "%d anomalies, at most %d", len(p.Anomalies), MaxAnomalies)
	}
	fields := slices.Sorted(func(yield func(string) bool) {
		for k := range p.Fields {
			if !yield(k) {
				return
			}
		}
	})
	for _, name := range fields {
		s := p.Fields[name]
		fp := path + ".fields." + name
		if name == "ts" || name == "" || strings.ContainsAny(name, "\"\\") {
			v.failf(fp, "%q cannot name a field (\"ts\" is the timestamp)", name)
		}
		s.validate(v, fp)
		p.Fields[name] = s
	}
	for i, a := range p.Anomalies {
		a.validate(v, fmt.Sprintf("%s.anomalies[%d]", path, i), p, d)
	}
}

func idDigits(n int) int { return max(4, len(strconv.Itoa(n))) }

// modelParams lists the parameters each model takes besides model, noise and decimals.
var modelParams = map[string][]string{
	"constant":    {"value"},
	"sine":        {"mean", "amplitude", "period"},
	"random_walk": {"start", "step", "min", "max"},
	"step":        {"values", "every"},
	"sequence":    {"values"},
}

func (s *Signal) validate(v *validator, path string) {
	params, ok := modelParams[s.Model]
	if !ok {
		if s.Model == "" {
			v.failf(path+".model", "required: constant, sine, random_walk, step or sequence")
		} else {
			v.failf(path+".model", "got %q, want constant, sine, random_walk, step or sequence", s.Model)
		}
		return
	}
	for _, k := range []string{"value", "mean", "amplitude", "period", "start", "step", "min", "max", "values", "every"} {
		if v.has(path+"."+k) && !slices.Contains(params, k) {
			v.failf(path+"."+k, "not a parameter of model %s (it takes %s)", s.Model, strings.Join(params, ", "))
		}
	}
	s.Value = normalize(s.Value)
	for i := range s.Values {
		s.Values[i] = normalize(s.Values[i])
	}
	switch s.Model {
	case "constant":
		if s.Value == nil {
			v.failf(path+".value", "required for model constant")
		} else if !scalar(s.Value) {
			v.failf(path+".value", "must be a number, string or boolean")
		}
	case "sine":
		if s.Period <= 0 {
			v.failf(path+".period", "required for model sine: a positive duration")
		}
	case "random_walk":
		if s.Step < 0 {
			v.failf(path+".step", "must not be negative")
		}
		if s.Min != nil && s.Max != nil && *s.Min > *s.Max {
			v.failf(path+".min", "%g is above max %g", *s.Min, *s.Max)
		}
	case "step", "sequence":
		if len(s.Values) == 0 {
			v.failf(path+".values", "required for model %s: a list of values", s.Model)
		}
		for i, x := range s.Values {
			if !scalar(x) {
				v.failf(fmt.Sprintf("%s.values[%d]", path, i), "must be a number, string or boolean")
			}
		}
		if s.Model == "step" && s.Every <= 0 {
			v.failf(path+".every", "required for model step: a positive duration")
		}
	}
	if s.Noise < 0 {
		v.failf(path+".noise", "must not be negative")
	}
	if s.Decimals != nil && (*s.Decimals < 0 || *s.Decimals > 15) {
		v.failf(path+".decimals", "%d out of range 0 to 15", *s.Decimals)
	}
}

// numeric reports whether the signal's values are numbers.
func (s *Signal) numeric() bool {
	switch s.Model {
	case "sine", "random_walk":
		return true
	case "constant":
		_, ok := s.Value.(float64)
		return ok
	}
	for _, x := range s.Values {
		if _, ok := x.(float64); !ok {
			return false
		}
	}
	return true
}

func normalize(x any) any {
	switch n := x.(type) {
	case int:
		return float64(n)
	case int64:
		return float64(n)
	case uint64:
		return float64(n)
	}
	return x
}

func scalar(x any) bool {
	switch x.(type) {
	case float64, string, bool:
		return true
	}
	return false
}

func (a *Anomaly) validate(v *validator, path string, p *Profile, d *Definition) {
	switch a.Kind {
	case Spike, Drift, Stuck:
		s, ok := p.Fields[a.Field]
		switch {
		case a.Field == "":
			v.failf(path+".field", "required for %s", a.Kind)
		case !ok:
			v.failf(path+".field", "%q is not a field of profile %s", a.Field, p.Name)
		case a.Kind != Stuck && !s.numeric():
			v.failf(path+".field", "%q is not numeric; %s needs a number", a.Field, a.Kind)
		case a.Kind != Stuck && a.Magnitude == 0:
			v.failf(path+".magnitude", "required for %s: the change to add", a.Kind)
		}
	case Dropout:
		if a.Field != "" {
			v.failf(path+".field", "dropout silences the whole device; leave field out")
		}
	case "":
		v.failf(path+".kind", "required: spike, drift, stuck or dropout")
	default:
		v.failf(path+".kind", "got %q, want spike, drift, stuck or dropout", a.Kind)
	}
	switch {
	case a.At < 0:
		v.failf(path+".at", "must not be negative")
	case d.Duration > 0 && a.At >= d.Duration:
		v.failf(path+".at", "%s is not before the end of the run (duration %s)", a.At.D(), d.Duration.D())
	case a.Duration < 0:
		v.failf(path+".duration", "must not be negative")
	case a.Devices.N < 0 || a.Devices.Percent < 0 || a.Devices.Percent > 100:
		v.failf(path+".devices", "want a number of devices from 1 to %d or a percentage up to 100%%", p.Devices)
	case a.Devices.N > p.Devices:
		v.failf(path+".devices", "%d, but profile %s has %d devices", a.Devices.N, p.Name, p.Devices)
	}
}

// window is the anomaly's duration, defaulting to one message interval.
func (a *Anomaly) window(p *Profile) time.Duration {
	if a.Duration > 0 {
		return a.Duration.D()
	}
	return p.Rate.Interval()
}
