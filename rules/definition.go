package rules

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tributary-iot/tributary/rules/sql"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/window"
)

// Spec is what a user says about a rule: the JSON body of POST and PUT /api/v1/rules.
type Spec struct {
	// Name is 1 to 64 letters, digits, '-' and '_', starting with a letter or digit.
	Name string `json:"name"`
	// SQL is the query (see rules/sql).
	SQL         string `json:"sql"`
	Description string `json:"description,omitempty"`
	// Lateness is how long after a window's end its events may still arrive (default 5s).
	Lateness *Duration `json:"lateness,omitempty"`
	// IdleTimeout lets windows close while the input is quiet: after this long without input,
	// event time is taken to pass like processing time (default 30s; "0s" turns it off).
	IdleTimeout *Duration `json:"idle_timeout,omitempty"`
	// MaxFuture rejects events stamped more than this after their receive time (default 0: off).
	MaxFuture *Duration `json:"max_future,omitempty"`
	// Notify is "every" (default: every result is a notification) or "change" (alert rules only:
	// notify when a group's condition starts to hold, "fired", and when it stops, "cleared").
	Notify  string   `json:"notify,omitempty"`
	Outputs []Output `json:"outputs,omitempty"`
	// Enabled defaults to true. A disabled rule keeps its state and resumes where it stopped.
	Enabled *bool `json:"enabled,omitempty"`
	// Start says where a new rule (or one whose state starts over) begins reading: "now"
	// (default), "earliest" (everything still in the stream) or an RFC 3339 time.
	Start string `json:"start,omitempty"`
	// Canary, when set, makes the rule a canary (canary.go): SQL is derived from it.
	Canary *CanaryDef `json:"canary,omitempty"`
	// Tenant owns the rule; it reads only that tenant's messages (tenant.go). "" is the
	// default tenant.
	Tenant string `json:"tenant,omitempty"`
}

// Output kinds.
const (
	OutputMQTT    = "mqtt"
	OutputCommand = "command"
	OutputWebhook = "webhook"
)

// Notify modes.
const (
	NotifyEvery  = "every"
	NotifyChange = "change"
)

// Output is where a rule's notifications go besides rules/<name>/alerts.
type Output struct {
	// Kind is "mqtt", "command" or "webhook".
	Kind string `json:"kind"`
	// Topic (mqtt) is the topic the notification is published on, e.g. "alerts/hot-rooms".
	Topic string `json:"topic,omitempty"`
	// Command (command) is the command name: the notification is sent to
	// devices/<the group's device>/commands/<Command>.
	Command string `json:"command,omitempty"`
	// URL (webhook) receives an HTTP POST of the notification as JSON.
	URL string `json:"url,omitempty"`
	// Headers (webhook) are added to each request, e.g. Authorization.
	Headers map[string]string `json:"headers,omitempty"`
	// MaxAttempts (webhook) is the number of tries before the notification is dead-lettered
	// (default 5).
	MaxAttempts int `json:"max_attempts,omitempty"`
	// Backoff (webhook) is the wait before the first retry; it doubles each time up to a
	// minute, with ±20% jitter (default 1s).
	Backoff *Duration `json:"backoff,omitempty"`
	// Timeout (webhook) bounds one request (default 10s).
	Timeout *Duration `json:"timeout,omitempty"`
}

// Rule is a rule as stored and as the API returns it: the Spec with every default filled in,
// plus what the hub derived from it.
type Rule struct {
	Spec
	// Source is the topic filter the rule reads ("rules/a" reads "rules/a/results").
	Source string `json:"source"`
	// Alert is true for rules with HAVING: their results are alerts.
	Alert bool `json:"alert"`
	// Window is the window in canonical form, e.g. "TUMBLING(1m)".
	Window  string   `json:"window"`
	GroupBy []string `json:"group_by"`
	Columns []string `json:"columns"`
	// Fingerprint identifies the rule's meaning: the normalised query and the lateness,
	// idle timeout and max future. Changing it starts the rule's state over.
	Fingerprint string `json:"fingerprint"`
	// Incarnation changes whenever the state starts over (creation, a change of meaning).
	Incarnation string `json:"incarnation"`
	// StartSeq is the stream sequence the current incarnation started reading at.
	StartSeq   uint64    `json:"start_seq"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	StateSince time.Time `json:"state_since"`
}

// IsEnabled reports whether the rule runs.
func (r *Rule) IsEnabled() bool { return r.Enabled == nil || *r.Enabled }

// Defaults.
const (
	DefaultLateness    = 5 * time.Second
	DefaultIdleTimeout = 30 * time.Second
	DefaultAttempts    = 5
	DefaultBackoff     = time.Second
	DefaultTimeout     = 10 * time.Second
	maxBackoff         = time.Minute
	MaxOutputs         = 16
	maxLateness        = 30 * 24 * time.Hour
)

// Duration is a time.Duration that reads and writes JSON strings like "10s" or "1h30m".
type Duration time.Duration

// D is a shorthand for a *Duration.
func D(d time.Duration) *Duration { x := Duration(d); return &x }

func (d Duration) String() string {
	if d == 0 {
		return "0s"
	}
	return time.Duration(d).String()
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a Go duration string ("500ms", "10s", "1h30m").
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string like \"10s\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration like \"10s\", got %q", s)
	}
	*d = Duration(v)
	return nil
}

func dur(p *Duration, def time.Duration) time.Duration {
	if p == nil {
		return def
	}
	return time.Duration(*p)
}

// compiled is a rule ready to run.
type compiled struct {
	rule   *sql.Rule
	plan   *window.Plan // HAVING moved into the hidden column havingColumn
	opts   window.Options
	filter string // MQTT filter of the input topics
	alert  bool
	fp     string
	idTail string // "@" + part of fp: appended to every message ID the rule publishes
	canary *CanaryDef
}

// havingColumn carries the outcome of HAVING, so the runner sees windows that fail it too
// (for notify "change"); it is never published.
const havingColumn = "\x00having"

// compile validates spec and builds what runs it. Every error is an *InvalidError.
func compile(spec *Spec) (*compiled, error) {
	if !sql.ValidRuleName(spec.Name) {
		return nil, invalidf("name", fmt.Sprintf("%q: use 1 to 64 letters, digits, '-' or '_', starting with a letter or digit", spec.Name))
	}
	if err := validateTenant(spec); err != nil {
		return nil, err
	}
	if spec.Canary != nil {
		if err := prepareCanary(spec); err != nil {
			return nil, err
		}
	}
	if strings.TrimSpace(spec.SQL) == "" {
		return nil, invalidf("sql", "the query is empty")
	}
	r, err := sql.Compile(spec.Name, spec.SQL)
	if err != nil {
		var pe *sql.ParseError
		if errors.As(err, &pe) {
			return nil, invalid("", pe)
		}
		return nil, invalid("sql", err)
	}
	c := &compiled{rule: r, alert: r.Plan.Having != nil || spec.Canary != nil} // a canary alerts on a failing verdict
	c.opts = window.Options{
		Lateness:    dur(spec.Lateness, DefaultLateness),
		IdleTimeout: dur(spec.IdleTimeout, DefaultIdleTimeout),
		MaxFuture:   dur(spec.MaxFuture, 0),
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"lateness", c.opts.Lateness}, {"idle_timeout", c.opts.IdleTimeout}, {"max_future", c.opts.MaxFuture}} {
		if f.d < 0 || f.d > maxLateness {
			return nil, invalidf(f.name, fmt.Sprintf("must be between 0s and %s, got %s", maxLateness, f.d))
		}
	}
	switch spec.Notify {
	case "", NotifyEvery:
	case NotifyChange:
		if !c.alert {
			return nil, invalidf("notify", `"change" needs an alert rule: add a HAVING clause`)
		}
	default:
		return nil, invalidf("notify", fmt.Sprintf(`want "every" or "change", got %q`, spec.Notify))
	}
	if err := checkStart(spec.Start); err != nil {
		return nil, err
	}
	if len(spec.Outputs) > MaxOutputs {
		return nil, invalidf("outputs", fmt.Sprintf("at most %d outputs, got %d", MaxOutputs, len(spec.Outputs)))
	}
	for i := range spec.Outputs {
		if err := spec.Outputs[i].validate(fmt.Sprintf("outputs[%d]", i)); err != nil {
			return nil, err
		}
	}
	c.filter = sourceFilter(r.Source.Topic)
	if err := streams.ValidFilter(c.filter); err != nil {
		return nil, invalidf("sql", fmt.Sprintf("FROM %q is not a usable topic filter: %v", r.Source.Topic, err))
	}

	plan := *r.Plan
	if spec.Canary != nil {
		// The same filter as the query's WHERE, with device lists as sets: an IN list is
		// checked item by item for every event.
		plan.Where = spec.Canary.where()
	}
	if having := plan.Having; having != nil {
		plan.Having = nil
		plan.Columns = append(plan.Columns[:len(plan.Columns):len(plan.Columns)], window.Column{
			Name: havingColumn,
			Eval: func(row *window.Row) window.Value { return window.BoolValue(having(row)) },
		})
	}
	c.plan = &plan
	if _, err := window.New(c.plan, c.opts); err != nil {
		return nil, invalid("sql", err)
	}
	sum := sha256.Sum256(fmt.Appendf(nil, "%s|%d|%d|%d", plan.Fingerprint, c.opts.Lateness, c.opts.IdleTimeout, c.opts.MaxFuture))
	c.fp = hex.EncodeToString(sum[:8])
	if spec.Canary != nil {
		c.canary, c.fp = spec.Canary, spec.Canary.fingerprint(c.fp)
	}
	c.idTail = "@" + c.fp[:8]
	return c, nil
}

// sourceFilter maps FROM to the topics read: a rule's results for "rules/<name>" and
// "rules/+", the topic filter itself otherwise.
func sourceFilter(topic string) string {
	levels := strings.Split(topic, "/")
	if levels[0] == "rules" && len(levels) == 2 && levels[1] != "#" {
		return topic + "/results"
	}
	return topic
}

func checkStart(s string) error {
	switch s {
	case "", "now", "earliest":
		return nil
	}
	if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
		return invalidf("start", fmt.Sprintf(`want "now", "earliest" or an RFC 3339 time, got %q`, s))
	}
	return nil
}

func (o *Output) validate(field string) error {
	unused := func(name string, set bool) error {
		if set {
			return invalidf(field+"."+name, fmt.Sprintf("not used by kind %q", o.Kind))
		}
		return nil
	}
	webhookOnly := func() error {
		for _, u := range []struct {
			name string
			set  bool
		}{{"url", o.URL != ""}, {"headers", len(o.Headers) > 0}, {"max_attempts", o.MaxAttempts != 0},
			{"backoff", o.Backoff != nil}, {"timeout", o.Timeout != nil}} {
			if err := unused(u.name, u.set); err != nil {
				return err
			}
		}
		return nil
	}
	switch o.Kind {
	case OutputMQTT:
		if err := webhookOnly(); err != nil {
			return err
		}
		if err := unused("command", o.Command != ""); err != nil {
			return err
		}
		return validOutputTopic(field+".topic", o.Topic)
	case OutputCommand:
		if err := webhookOnly(); err != nil {
			return err
		}
		if err := unused("topic", o.Topic != ""); err != nil {
			return err
		}
		if o.Command == "" || len(o.Command) > 128 || strings.ContainsAny(o.Command, "/+#\x00") {
			return invalidf(field+".command", fmt.Sprintf("want a command name (1 to 128 bytes, no '/', '+', '#'), got %q", o.Command))
		}
		return nil
	case OutputWebhook:
		if err := unused("topic", o.Topic != ""); err != nil {
			return err
		}
		if err := unused("command", o.Command != ""); err != nil {
			return err
		}
		u, err := url.Parse(o.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return invalidf(field+".url", fmt.Sprintf("want an absolute http or https URL, got %q", o.URL))
		}
		if o.MaxAttempts < 0 || o.MaxAttempts > 20 {
			return invalidf(field+".max_attempts", "want 1 to 20 (0 means the default, "+strconv.Itoa(DefaultAttempts)+")")
		}
		if o.Backoff != nil && (*o.Backoff <= 0 || time.Duration(*o.Backoff) > maxBackoff) {
			return invalidf(field+".backoff", fmt.Sprintf("want more than 0s and at most %s, got %s", maxBackoff, o.Backoff))
		}
		if o.Timeout != nil && (*o.Timeout <= 0 || time.Duration(*o.Timeout) > 5*time.Minute) {
			return invalidf(field+".timeout", fmt.Sprintf("want more than 0s and at most 5m, got %s", o.Timeout))
		}
		for k := range o.Headers {
			if k == "" || strings.ContainsAny(k, " :\r\n\t") {
				return invalidf(field+".headers", fmt.Sprintf("%q is not a header name", k))
			}
		}
		return nil
	case "":
		return invalidf(field+".kind", `missing: want "mqtt", "command" or "webhook"`)
	}
	return invalidf(field+".kind", fmt.Sprintf(`unknown output kind %q: want "mqtt", "command" or "webhook"`, o.Kind))
}

// validOutputTopic accepts topics an application could publish on: no wildcards, and neither
// under devices/ (use a command output) nor rules/ (the hub's own), nor starting with '$'.
func validOutputTopic(field, topic string) error {
	if _, err := streams.TopicToSubject(topic); err != nil {
		return invalidf(field, fmt.Sprintf("%q is not a topic without wildcards", topic))
	}
	first, _, _ := strings.Cut(topic, "/")
	switch {
	case first == "devices":
		return invalidf(field, fmt.Sprintf("%q: topics under devices/ are the devices' own; send a command with kind \"command\"", topic))
	case first == "rules":
		return invalidf(field, fmt.Sprintf("%q: topics under rules/ are the hub's own", topic))
	case strings.HasPrefix(topic, "$"):
		return invalidf(field, fmt.Sprintf("%q: topics starting with '$' are reserved", topic))
	}
	return nil
}

// webhooks returns the rule's webhook outputs.
func (s *Spec) webhooks() []Output {
	var out []Output
	for _, o := range s.Outputs {
		if o.Kind == OutputWebhook {
			out = append(out, o)
		}
	}
	return out
}

// describe fills in the derived fields of r from c.
func (r *Rule) describe(c *compiled) {
	r.Source = c.rule.Source.Topic
	r.Alert = c.alert
	r.Window = c.plan.Window.String()
	r.GroupBy = make([]string, 0, len(c.plan.GroupBy))
	for _, k := range c.plan.GroupBy {
		r.GroupBy = append(r.GroupBy, k.Name)
	}
	r.Columns = make([]string, 0, len(c.plan.Columns))
	for _, col := range c.plan.Columns {
		if col.Name != havingColumn {
			r.Columns = append(r.Columns, col.Name)
		}
	}
	if c.plan.Fleet != nil {
		r.Columns = append(r.Columns, window.FleetColumns...) // OUTLIERS adds its verdict
	}
	r.Fingerprint = c.fp
	if r.Lateness == nil {
		r.Lateness = D(c.opts.Lateness)
	}
	if r.IdleTimeout == nil {
		r.IdleTimeout = D(c.opts.IdleTimeout)
	}
	if r.MaxFuture == nil {
		r.MaxFuture = D(c.opts.MaxFuture)
	}
	if r.Notify == "" {
		r.Notify = NotifyEvery
	}
	if r.Enabled == nil {
		t := true
		r.Enabled = &t
	}
	for i := range r.Outputs {
		o := &r.Outputs[i]
		if o.Kind != OutputWebhook {
			continue
		}
		if o.MaxAttempts == 0 {
			o.MaxAttempts = DefaultAttempts
		}
		if o.Backoff == nil {
			o.Backoff = D(DefaultBackoff)
		}
		if o.Timeout == nil {
			o.Timeout = D(DefaultTimeout)
		}
	}
}
