package rules

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/tributary-iot/tributary/canary"
	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/streams/window"
)

// A canary is a kind of rule: its definition (Spec.Canary) compiles to a query that averages
// each metric per device and TUMBLING(interval) window over the devices of both groups, and
// the runner scores each closed window with package canary instead of publishing the
// per-device rows (canary_run.go). Everything else — checkpoints, exactly-once IDs, results on
// rules/<name>/results, alerts, outputs, webhooks, InfluxDB, stats — is the rules' own.

// DefaultTenant is the tenant of a canary that names none (the devices' default tenant).
const DefaultTenant = devices.DefaultTenant

// Selector picks a group of devices: an explicit list of IDs, or a device type and/or tags
// ("key:value"; all must match).
type Selector struct {
	Devices []string `json:"devices,omitempty"`
	Type    string   `json:"type,omitempty"`
	Tags    []string `json:"tags,omitempty"`
}

// CanaryDef is what makes a rule a canary (Spec.Canary).
type CanaryDef struct {
	Tenant  string   `json:"tenant"`
	Canary  Selector `json:"canary_group"`
	Control Selector `json:"control_group"`
	// Interval is the event-time window each comparison covers (default 1m).
	Interval *Duration `json:"interval,omitempty"`
	canary.Config
}

// Canary limits and defaults.
const (
	DefaultCanaryInterval = time.Minute
	minCanaryInterval     = 100 * time.Millisecond
	maxCanaryInterval     = 24 * time.Hour
	maxSelectorDevices    = 10000
)

// CanarySpec is what a user says about a canary: the JSON body of POST /api/v1/canaries.
type CanarySpec struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	CanaryDef
	Lateness    *Duration `json:"lateness,omitempty"`
	IdleTimeout *Duration `json:"idle_timeout,omitempty"`
	// Notify is "every" (default: an alert for every interval that ends with a failing
	// verdict) or "change" (when the verdict turns to fail, "fired", and back, "cleared").
	Notify  string   `json:"notify,omitempty"`
	Outputs []Output `json:"outputs,omitempty"`
	Enabled *bool    `json:"enabled,omitempty"`
	Start   string   `json:"start,omitempty"`
}

// Canary is a canary as the API returns it: the spec with every default filled in, the query
// it runs, and its latest result.
type Canary struct {
	CanarySpec
	SQL         string    `json:"sql"`
	Fingerprint string    `json:"fingerprint"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	// Latest is the result of the latest interval (nil before the first closes).
	Latest *Result `json:"latest,omitempty"`
}

// ruleSpec is the rule a canary is stored as.
func (s *CanarySpec) ruleSpec() Spec {
	def := s.CanaryDef
	return Spec{Name: s.Name, Description: s.Description, Lateness: s.Lateness, IdleTimeout: s.IdleTimeout,
		Notify: s.Notify, Outputs: s.Outputs, Enabled: s.Enabled, Start: s.Start, Canary: &def}
}

func canaryOf(r Rule) Canary {
	c := Canary{CanarySpec: CanarySpec{Name: r.Name, Description: r.Description, CanaryDef: *r.Canary,
		Lateness: r.Lateness, IdleTimeout: r.IdleTimeout, Notify: r.Notify, Outputs: r.Outputs,
		Enabled: r.Enabled, Start: r.Start},
		SQL: r.SQL, Fingerprint: r.Fingerprint, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}
	return c
}

// prepareCanary validates spec.Canary, fills in its defaults and writes the query it runs
// into spec.SQL (replacing whatever was there: the query is derived).
func prepareCanary(spec *Spec) error {
	d := spec.Canary
	if d.Tenant == "" {
		d.Tenant = DefaultTenant
	} else if !validTenant(d.Tenant) {
		return invalidf("tenant", fmt.Sprintf("%q: use 1 to 64 letters, digits, '-' or '_'", d.Tenant))
	}
	if d.Interval == nil {
		d.Interval = D(DefaultCanaryInterval)
	} else if iv := time.Duration(*d.Interval); iv < minCanaryInterval || iv > maxCanaryInterval {
		return invalidf("interval", fmt.Sprintf("must be between %s and %s, got %s", minCanaryInterval, maxCanaryInterval, iv))
	}
	for _, g := range []struct {
		field string
		sel   *Selector
	}{{"canary_group", &d.Canary}, {"control_group", &d.Control}} {
		if err := g.sel.validate(g.field); err != nil {
			return err
		}
	}
	if err := checkOverlap(&d.Canary, &d.Control); err != nil {
		return err
	}
	if err := d.Config.Normalize(); err != nil {
		var ie *canary.InvalidError
		if errors.As(err, &ie) {
			return invalidf(ie.Field, ie.Msg)
		}
		return invalid("", err)
	}
	spec.SQL = d.query(spec.Name)
	return nil
}

func validTenant(s string) bool {
	if len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c < unicode.MaxASCII && (unicode.IsLetter(c) || unicode.IsDigit(c)) || c == '-' || c == '_') {
			return false
		}
	}
	return s != ""
}

func (s *Selector) validate(field string) error {
	if len(s.Devices) == 0 && s.Type == "" && len(s.Tags) == 0 {
		return invalidf(field, `empty: give "devices" (a list of IDs), or "type" and/or "tags" (e.g. ["fw:2.1"])`)
	}
	if len(s.Devices) > 0 && (s.Type != "" || len(s.Tags) > 0) {
		return invalidf(field, `give "devices" alone, or "type" and/or "tags", not both`)
	}
	if len(s.Devices) > maxSelectorDevices {
		return invalidf(field+".devices", fmt.Sprintf("at most %d devices, got %d", maxSelectorDevices, len(s.Devices)))
	}
	seen := map[string]bool{}
	for i, id := range s.Devices {
		if id == "" || len(id) > 128 || strings.ContainsFunc(id, unicode.IsControl) {
			return invalidf(fmt.Sprintf("%s.devices[%d]", field, i), fmt.Sprintf("%q is not a device ID", id))
		}
		if seen[id] {
			return invalidf(fmt.Sprintf("%s.devices[%d]", field, i), fmt.Sprintf("%q is listed twice", id))
		}
		seen[id] = true
	}
	if strings.ContainsFunc(s.Type, unicode.IsControl) || len(s.Type) > 128 {
		return invalidf(field+".type", fmt.Sprintf("%q is not a device type", s.Type))
	}
	keys := map[string]bool{}
	for i, t := range s.Tags {
		k, v, ok := strings.Cut(t, ":")
		if !ok || !canary.ValidField(k) || strings.Contains(k, ".") || v == "" || strings.ContainsFunc(v, unicode.IsControl) {
			return invalidf(fmt.Sprintf("%s.tags[%d]", field, i), fmt.Sprintf("want key:value, e.g. \"fw:2.1\", got %q", t))
		}
		if keys[k] {
			return invalidf(fmt.Sprintf("%s.tags[%d]", field, i), fmt.Sprintf("tag %q is given twice", k))
		}
		keys[k] = true
	}
	return nil
}

// checkOverlap refuses groups that certainly share devices: a device listed in both, or
// selectors of which one matches every device the other does. Groups that may overlap (a list
// and a selector, or selectors on different tags) are accepted; a device that matches both at
// run time is left out of both, with a warning in the result.
func checkOverlap(a, b *Selector) error {
	if len(a.Devices) > 0 && len(b.Devices) > 0 {
		for _, id := range a.Devices {
			if slices.Contains(b.Devices, id) {
				return invalidf("control_group", fmt.Sprintf("overlaps canary_group: device %q is in both", id))
			}
		}
		return nil
	}
	if len(a.Devices) > 0 || len(b.Devices) > 0 {
		return nil
	}
	ca, cb := a.constraints(), b.constraints()
	for k, v := range ca {
		if w, ok := cb[k]; ok && w != v {
			return nil // disjoint: they differ on a key both constrain
		}
	}
	subset := func(x, y map[string]string) bool { // every constraint of x is one of y
		for k, v := range x {
			if y[k] != v {
				return false
			}
		}
		return true
	}
	switch {
	case subset(cb, ca):
		return invalidf("control_group", "overlaps canary_group: every device of canary_group matches control_group too; make them differ, e.g. by tag value")
	case subset(ca, cb):
		return invalidf("control_group", "overlaps canary_group: every device of control_group matches canary_group too; make them differ, e.g. by tag value")
	}
	return nil
}

// constraints maps "type" and "tags.<key>" to the value a selector requires.
func (s *Selector) constraints() map[string]string {
	c := map[string]string{}
	if s.Type != "" {
		c["type"] = s.Type
	}
	for _, t := range s.Tags {
		k, v, _ := strings.Cut(t, ":")
		c["tags."+k] = v
	}
	return c
}

// matcher returns a test of whether a result's group (device, type, tags.<key> values) is of s.
func (s *Selector) matcher() func(group map[string]any) bool {
	if len(s.Devices) > 0 {
		ids := make(map[string]bool, len(s.Devices))
		for _, id := range s.Devices {
			ids[id] = true
		}
		return func(group map[string]any) bool {
			id, _ := group["device"].(string)
			return ids[id]
		}
	}
	want := s.constraints()
	return func(group map[string]any) bool {
		for k, v := range want {
			if got, _ := group[k].(string); got != v {
				return false
			}
		}
		return true
	}
}

// where is the canary's WHERE (either group) as a function of the event, equal to
// predicate's SQL: the device's ID in the list, or its type and tags as given.
func (d *CanaryDef) where() func(*window.Event) bool {
	a, b := d.Canary.eventMatcher(), d.Control.eventMatcher()
	return func(ev *window.Event) bool { return a(ev) || b(ev) }
}

func (s *Selector) eventMatcher() func(*window.Event) bool {
	if len(s.Devices) > 0 {
		ids := make(map[string]bool, len(s.Devices))
		for _, id := range s.Devices {
			ids[id] = true
		}
		return func(ev *window.Event) bool { return ids[ev.Device] }
	}
	typ, tags := s.Type, make([][2]string, 0, len(s.Tags))
	for _, t := range s.Tags {
		k, v, _ := strings.Cut(t, ":")
		tags = append(tags, [2]string{k, v})
	}
	return func(ev *window.Event) bool {
		if typ != "" && ev.Type != typ {
			return false
		}
		for _, kv := range tags {
			if ev.Tags[kv[0]] != kv[1] {
				return false
			}
		}
		return true
	}
}

func sqlString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func (s *Selector) predicate() string {
	if len(s.Devices) > 0 {
		q := make([]string, len(s.Devices))
		for i, id := range s.Devices {
			q[i] = sqlString(id)
		}
		return "device IN (" + strings.Join(q, ", ") + ")"
	}
	var parts []string
	if s.Type != "" {
		parts = append(parts, "type = "+sqlString(s.Type))
	}
	for _, t := range s.Tags {
		k, v, _ := strings.Cut(t, ":")
		parts = append(parts, `tags."`+k+`" = `+sqlString(v))
	}
	return "(" + strings.Join(parts, " AND ") + ")"
}

// groupKeys are the GROUP BY keys besides the window: the device, and what the selectors look
// at, so that each row can be assigned to its group when the window closes.
func (d *CanaryDef) groupKeys() []string {
	keys := []string{"device"}
	seen := map[string]bool{}
	for _, s := range []*Selector{&d.Canary, &d.Control} {
		if s.Type != "" && !seen["type"] {
			seen["type"] = true
			keys = append(keys, "type")
		}
		for _, t := range s.Tags {
			k, _, _ := strings.Cut(t, ":")
			if !seen[k] {
				seen[k] = true
				keys = append(keys, `tags."`+k+`"`)
			}
		}
	}
	return keys
}

// query is the rule a canary runs: each metric's mean and count per device and interval.
func (d *CanaryDef) query(name string) string {
	keys := d.groupKeys()
	cols := slices.Clone(keys)
	for i, m := range d.Metrics {
		f := `payload."` + m.Field + `"`
		// "+ 0" makes non-numbers NULL, so the count is of the readings the mean is of.
		cols = append(cols, fmt.Sprintf("avg(%s) AS m%d_mean", f, i), fmt.Sprintf("count(%s + 0) AS m%d_n", f, i))
	}
	return fmt.Sprintf("SELECT %s FROM 'devices/+/telemetry' WHERE %s OR %s GROUP BY %s, TUMBLING(%s)",
		strings.Join(cols, ", "), d.Canary.predicate(), d.Control.predicate(), strings.Join(keys, ", "),
		time.Duration(*d.Interval))
}

// fingerprint adds the scoring settings to a rule's fingerprint: changing how intervals are
// scored starts the canary's state (its verdict history) over.
func (d *CanaryDef) fingerprint(fp string) string {
	b, _ := json.Marshal(d.Config)
	sum := sha256.Sum256(append([]byte(fp+"|canary|"), b...))
	return hex.EncodeToString(sum[:8])
}

// CreateCanary stores a new canary. Errors: ErrExists (a rule or canary has the name), or an
// *InvalidError naming the field.
func (m *Manager) CreateCanary(ctx context.Context, spec CanarySpec) (Canary, error) {
	r, err := m.Create(ctx, spec.ruleSpec())
	if err != nil {
		return Canary{}, err
	}
	return canaryOf(r), nil
}

// GetCanary returns a canary with its latest result.
func (m *Manager) GetCanary(ctx context.Context, name string) (Canary, error) {
	r, err := m.getCanaryRule(ctx, name)
	if err != nil {
		return Canary{}, err
	}
	c := canaryOf(r)
	if st, err := m.Stats(ctx, name); err == nil {
		c.Latest = st.LastResult
	}
	return c, nil
}

func (m *Manager) getCanaryRule(ctx context.Context, name string) (Rule, error) {
	r, err := m.Get(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return Rule{}, canaryNotFound{name: name}
	}
	if err != nil {
		return Rule{}, err
	}
	if r.Canary == nil {
		return Rule{}, canaryNotFound{name: name, rule: true}
	}
	return r, nil
}

// PutCanary replaces canary name's definition, or creates the canary when no rule has the name;
// created says which. The name of a rule that is not a canary is refused (ErrNotFound naming
// it), so a rule is never turned into a canary by accident. A replaced canary starts over
// like an edited rule.
func (m *Manager) PutCanary(ctx context.Context, name string, spec CanarySpec) (Canary, bool, error) {
	var nf canaryNotFound
	if _, err := m.getCanaryRule(ctx, name); err != nil && (!errors.As(err, &nf) || nf.rule) {
		return Canary{}, false, err
	}
	r, created, err := m.Put(ctx, name, spec.ruleSpec())
	if err != nil {
		return Canary{}, false, err
	}
	return canaryOf(r), created, nil
}

// canaryNotFound is ErrNotFound for a canary, with a message that says so.
type canaryNotFound struct {
	name string
	rule bool // a rule (not a canary) has the name
}

func (e canaryNotFound) Error() string {
	if e.rule {
		return fmt.Sprintf("no canary named %q: %s is a rule, not a canary", e.name, e.name)
	}
	return fmt.Sprintf("no canary named %q", e.name)
}

func (e canaryNotFound) Is(target error) bool { return target == ErrNotFound }

// ListCanaries returns every canary, by name, each with its latest result.
func (m *Manager) ListCanaries(ctx context.Context) ([]Canary, error) {
	all, err := m.List(ctx)
	if err != nil {
		return nil, err
	}
	out := []Canary{}
	for _, r := range all {
		if r.Canary == nil {
			continue
		}
		c := canaryOf(r)
		if st, err := m.Stats(ctx, r.Name); err == nil {
			c.Latest = st.LastResult
		}
		out = append(out, c)
	}
	return out, nil
}

// DeleteCanary removes a canary (see Delete).
func (m *Manager) DeleteCanary(ctx context.Context, name string) error {
	if _, err := m.getCanaryRule(ctx, name); err != nil {
		return err
	}
	return m.Delete(ctx, name)
}

// CanaryResults reads a canary's per-interval results (see Results).
func (m *Manager) CanaryResults(ctx context.Context, name string, q ResultsQuery) (ResultsPage, error) {
	if _, err := m.getCanaryRule(ctx, name); err != nil {
		return ResultsPage{}, err
	}
	return m.Results(ctx, name, q)
}
