// Package rulesbench measures rules end to end on a running hub: many rules over one device
// stream fed with MQTT QoS 0 telemetry as fast as the hub takes it. It reports the ingest rate,
// the events the rules processed per second, how far the rules fell behind (consumer lag) and
// how late results were published (results lag). cmd/hubbench and BenchmarkRules100 call Run.
package rulesbench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Target is the hub under test.
type Target struct {
	HTTP   string // host:port of the API
	MQTT   string // host:port of the MQTT listener
	NATS   string // client URL of the hub's NATS server
	APIKey string
}

// Params shape the run.
type Params struct {
	Rules   int           // rules over devices/+/telemetry (default 100)
	Devices int           // publishing MQTT clients, one device each (default 10)
	Publish time.Duration // how long the devices publish (default 10s)
	// Rate is the messages per second offered by all devices together; 0 publishes as fast
	// as the hub takes QoS 0 messages.
	Rate   int
	Window time.Duration // every rule's TUMBLING window (default 1s)
	// Lateness of every rule (default 200ms).
	Lateness time.Duration
	// Prefix names the devices and rules, so runs on one hub do not collide (default "rb").
	Prefix string
}

func (p *Params) defaults() {
	if p.Rules == 0 {
		p.Rules = 100
	}
	if p.Devices == 0 {
		p.Devices = 10
	}
	if p.Publish == 0 {
		p.Publish = 10 * time.Second
	}
	if p.Window == 0 {
		p.Window = time.Second
	}
	if p.Lateness == 0 {
		p.Lateness = 200 * time.Millisecond
	}
	if p.Prefix == "" {
		p.Prefix = "rb"
	}
}

// Report is what Run measured.
type Report struct {
	Rules   int `json:"rules"`
	Devices int `json:"devices"`
	// Rate is the offered rate (0: as fast as possible).
	Rate int `json:"offered_msgs_per_sec"`
	// Sent is the number of QoS 0 messages published; Stored how many the hub stored.
	Sent   int `json:"sent"`
	Stored int `json:"stored"`
	// IngestPerSec is Stored over the publishing time.
	IngestPerSec float64 `json:"ingest_msgs_per_sec"`
	// RuleEventsPerSec is the events processed by all rules together per second, from the
	// first publish until every rule had processed every message.
	RuleEventsPerSec float64 `json:"rule_events_per_sec"`
	// KeptUp is true when every rule had processed every message within 2s of the last
	// publish being stored.
	KeptUp bool `json:"kept_up"`
	// CatchUpMS is the time from the last stored message until every rule had processed it.
	CatchUpMS float64 `json:"catch_up_ms"`
	// MaxConsumerLag is the largest backlog of any rule seen while publishing (messages).
	MaxConsumerLag float64 `json:"max_consumer_lag"`
	// Results lag: when a result reached a NATS subscriber minus when its window could close
	// (window end + lateness), over all results of all rules.
	Results      int     `json:"results"`
	ResultLagP50 float64 `json:"result_lag_p50_ms"`
	ResultLagP99 float64 `json:"result_lag_p99_ms"`
	ResultLagMax float64 `json:"result_lag_max_ms"`
}

// String formats the report as the line the benchmarks print.
func (r *Report) String() string {
	offered := "max"
	if r.Rate > 0 {
		offered = strconv.Itoa(r.Rate)
	}
	return fmt.Sprintf("%d rules on %d devices, offered %s msgs/s: ingest %.0f msgs/s (%d of %d stored), rules %.0f events/s, kept up %v (caught up %.0f ms after the last message, max lag %.0f msgs), results lag p50 %.0f ms p99 %.0f ms max %.0f ms over %d results",
		r.Rules, r.Devices, offered, r.IngestPerSec, r.Stored, r.Sent, r.RuleEventsPerSec, r.KeptUp, r.CatchUpMS, r.MaxConsumerLag,
		r.ResultLagP50, r.ResultLagP99, r.ResultLagMax, r.Results)
}

type client struct {
	t    Target
	http *http.Client
}

func (c *client) do(ctx context.Context, method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.t.HTTP+path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.t.APIKey)
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s %s", method, path, resp.Status, bytes.TrimSpace(data))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// Run creates the devices and rules, publishes for p.Publish, waits for the rules to finish,
// removes the rules, and reports. Progress goes to log (may be nil).
func Run(ctx context.Context, t Target, p Params, log io.Writer) (*Report, error) {
	p.defaults()
	if log == nil {
		log = io.Discard
	}
	c := &client{t: t, http: &http.Client{Timeout: 30 * time.Second}}
	rep := &Report{Rules: p.Rules, Devices: p.Devices, Rate: p.Rate}

	tokens := make([]string, p.Devices)
	ids := make([]string, p.Devices)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-dev-%03d", p.Prefix, i)
		var out struct{ Token string }
		if err := c.do(ctx, "POST", "/api/v1/devices", map[string]any{"id": ids[i], "type": "bench"}, &out); err != nil {
			return nil, err
		}
		tokens[i] = out.Token
	}
	defer func() {
		for _, id := range ids {
			_ = c.do(context.Background(), "DELETE", "/api/v1/devices/"+id, nil, nil)
		}
	}()
	names := make([]string, p.Rules)
	aggs := []string{"avg(temperature) AS a, max(temperature) AS m", "count(*) AS n, min(humidity) AS h",
		"sum(pressure) AS s, last(battery) AS b", "avg(rssi) AS r, count(door) AS d"}
	for i := range names {
		names[i] = fmt.Sprintf("%s-rule-%03d", p.Prefix, i)
		sql := fmt.Sprintf(`SELECT device, %s FROM 'devices/+/telemetry' WHERE type = 'bench' AND temperature > %d GROUP BY device, TUMBLING(%s)`,
			aggs[i%len(aggs)], -i, p.Window)
		spec := map[string]any{"name": names[i], "sql": sql, "lateness": p.Lateness.String(), "idle_timeout": "2s"}
		if err := c.do(ctx, "POST", "/api/v1/rules", spec, nil); err != nil {
			return nil, err
		}
	}
	defer func() {
		for _, n := range names {
			_ = c.do(context.Background(), "DELETE", "/api/v1/rules/"+n, nil, nil)
		}
	}()
	fmt.Fprintf(log, "rules: %d rules created, waiting for them to run...\n", p.Rules)
	if err := waitFor(ctx, 60*time.Second, func() (bool, error) {
		for _, n := range names {
			var s struct {
				Running    bool `json:"running"`
				CatchingUp bool `json:"catching_up"`
			}
			if err := c.do(ctx, "GET", "/api/v1/rules/"+n+"/stats", nil, &s); err != nil || !s.Running || s.CatchingUp {
				return false, err
			}
		}
		return true, nil
	}); err != nil {
		return nil, fmt.Errorf("rules not running: %w", err)
	}

	nc, err := nats.Connect(t.NATS)
	if err != nil {
		return nil, fmt.Errorf("connect to the hub's NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	stream, err := js.Stream(ctx, "IOT")
	if err != nil {
		return nil, err
	}
	storedBefore, err := storedOn(ctx, stream, "iot.devices.*.telemetry")
	if err != nil {
		return nil, err
	}
	eventsBefore, err := ruleEvents(ctx, c, p.Prefix+"-rule-")
	if err != nil {
		return nil, err
	}

	// Results lag, from a NATS subscriber of every rule's results.
	var lagMu sync.Mutex
	var lags []float64
	sub, err := nc.Subscribe("iot.rules.*.results", func(m *nats.Msg) {
		now := time.Now()
		var r struct {
			Rule      string    `json:"rule"`
			WindowEnd time.Time `json:"window_end"`
		}
		if json.Unmarshal(m.Data, &r) != nil || !strings.HasPrefix(r.Rule, p.Prefix+"-rule-") {
			return
		}
		lagMu.Lock()
		lags = append(lags, float64(now.Sub(r.WindowEnd.Add(p.Lateness)))/1e6)
		lagMu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	_ = sub.SetPendingLimits(-1, -1)

	conns := make([]paho.Client, p.Devices)
	for i := range conns {
		opts := paho.NewClientOptions().AddBroker("tcp://" + t.MQTT).SetClientID(ids[i]).SetUsername(ids[i]).SetPassword(tokens[i]).
			SetOrderMatters(false).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second).SetWriteTimeout(30 * time.Second)
		conns[i] = paho.NewClient(opts)
		if tok := conns[i].Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return nil, fmt.Errorf("mqtt connect %s: %v", ids[i], tok.Error())
		}
		defer conns[i].Disconnect(100)
	}

	// Sample the rules' consumer lag from /metrics while publishing.
	var maxLag atomic.Uint64
	sctx, stopSampling := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for sctx.Err() == nil {
			if l, err := maxRuleLag(sctx, c, p.Prefix+"-rule-"); err == nil && l > float64(maxLag.Load()) {
				maxLag.Store(uint64(l))
			}
			select {
			case <-sctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()

	offered := "as fast as the hub takes them"
	if p.Rate > 0 {
		offered = fmt.Sprintf("at %d msgs/s", p.Rate)
	}
	fmt.Fprintf(log, "rules: %d devices publishing QoS 0 %s for %s...\n", p.Devices, offered, p.Publish)
	payload := []byte(`{"temperature":21.53,"humidity":40.2,"pressure":1013.25,"door":false,"fw":"1.2.3","battery":87.5,"rssi":-71}`)
	start := time.Now()
	deadline := start.Add(p.Publish)
	var sent atomic.Int64
	for i, cl := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := "devices/" + ids[i] + "/telemetry"
			if p.Rate > 0 {
				// Paced: every 10 ms, catch up with the client's share of the rate.
				share := float64(p.Rate) / float64(p.Devices)
				tick := time.NewTicker(10 * time.Millisecond)
				defer tick.Stop()
				n := 0
				for now := range tick.C {
					if now.After(deadline) || ctx.Err() != nil {
						return
					}
					for due := int(share * now.Sub(start).Seconds()); n < due; n++ {
						cl.Publish(topic, 0, false, payload)
						sent.Add(1)
					}
				}
				return
			}
			for n := 0; ; n++ {
				if n%64 == 0 && (time.Now().After(deadline) || ctx.Err() != nil) {
					return
				}
				tok := cl.Publish(topic, 0, false, payload)
				if n%256 == 255 {
					tok.Wait() // keep the client's outgoing queue short
				}
				sent.Add(1)
			}
		}()
	}
	// Wait until the hub has stored what it will store.
	var stored uint64
	var storedAt time.Time
	err = waitFor(ctx, p.Publish+60*time.Second, func() (bool, error) {
		n, err := storedOn(ctx, stream, "iot.devices.*.telemetry")
		if err != nil {
			return false, err
		}
		if n != stored {
			stored, storedAt = n, time.Now()
			return false, nil
		}
		return time.Now().After(deadline) && time.Since(storedAt) > 500*time.Millisecond, nil
	})
	if err != nil {
		stopSampling()
		wg.Wait()
		return nil, err
	}
	rep.Sent, rep.Stored = int(sent.Load()), int(stored-storedBefore)
	pubEnd := storedAt
	rep.IngestPerSec = float64(rep.Stored) / pubEnd.Sub(start).Seconds()

	// Wait until every rule has processed every message.
	want := eventsBefore + uint64(rep.Stored)*uint64(p.Rules)
	var done time.Time
	err = waitFor(ctx, 5*time.Minute, func() (bool, error) {
		n, err := ruleEvents(ctx, c, p.Prefix+"-rule-")
		if err != nil || n < want {
			return false, err
		}
		done = time.Now()
		return true, nil
	})
	stopSampling()
	wg.Wait()
	if err != nil {
		return nil, fmt.Errorf("rules did not process every message: %w", err)
	}
	rep.CatchUpMS = float64(max(0, done.Sub(pubEnd))) / 1e6
	rep.KeptUp = done.Sub(pubEnd) < 2*time.Second
	rep.RuleEventsPerSec = float64(uint64(rep.Stored)*uint64(p.Rules)) / done.Sub(start).Seconds()
	rep.MaxConsumerLag = float64(maxLag.Load())

	lagMu.Lock()
	ls := slices.Clone(lags)
	lagMu.Unlock()
	slices.Sort(ls)
	rep.Results = len(ls)
	if len(ls) > 0 {
		pct := func(q float64) float64 { return ls[min(len(ls)-1, int(q*float64(len(ls))))] }
		rep.ResultLagP50, rep.ResultLagP99, rep.ResultLagMax = pct(0.50), pct(0.99), ls[len(ls)-1]
	}
	fmt.Fprintln(log, "rules:", rep)
	return rep, nil
}

func waitFor(ctx context.Context, d time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(d)
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("timed out")
			}
			return fmt.Errorf("after %s: %w", d, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func storedOn(ctx context.Context, s jetstream.Stream, subject string) (uint64, error) {
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n, nil
}

// ruleEvents sums tributary_rule_events_total over the rules named with prefix.
func ruleEvents(ctx context.Context, c *client, prefix string) (uint64, error) {
	var sum float64
	err := scrape(ctx, c, func(name, labels string, v float64) {
		if name == "tributary_rule_events_total" && strings.Contains(labels, `rule="`+prefix) {
			sum += v
		}
	})
	return uint64(sum), err
}

func maxRuleLag(ctx context.Context, c *client, prefix string) (float64, error) {
	var m float64
	err := scrape(ctx, c, func(name, labels string, v float64) {
		if name == "tributary_rule_consumer_lag" && strings.Contains(labels, `rule="`+prefix) {
			m = max(m, v)
		}
	})
	return m, err
}

// scrape reads /metrics and calls fn for each sample.
func scrape(ctx context.Context, c *client, fn func(name, labels string, v float64)) error {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+c.t.HTTP+"/metrics", nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "tributary_rule_") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		name, labels, _ := strings.Cut(line[:sp], "{")
		fn(name, labels, v)
	}
	return sc.Err()
}
