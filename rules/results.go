package rules

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/influxdata/influxdb-client-go/v2/api/write"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/tsdb"
)

// ResultsQuery selects stored results of one rule.
type ResultsQuery struct {
	// From and To bound the window end: From <= window_end < To (zero: unbounded). The scan
	// starts at results stored at From, which holds whenever results are stored after their
	// window ends, i.e. unless events are stamped in the future.
	From, To time.Time
	// After continues a previous page: results stored after this stream sequence.
	After uint64
	// Limit is the most results returned (default 1000, at most MaxResults).
	Limit int
}

// MaxResults caps ResultsQuery.Limit.
const MaxResults = 10000

// StoredResult is a result as read back from the stream.
type StoredResult struct {
	Result
	Seq      uint64    `json:"seq"`
	StoredAt time.Time `json:"stored_at"`
}

// ResultsPage is an answer of Results: oldest first; Next, when set, is the After of the
// next page.
type ResultsPage struct {
	Results []StoredResult `json:"results"`
	Next    uint64         `json:"next,omitempty"`
}

// Results reads a rule's results from the stream (rules/<name>/results, kept for the hub's
// retention). Each window's result is there once.
func (m *Manager) Results(ctx context.Context, name string, q ResultsQuery) (ResultsPage, error) {
	if _, err := m.Get(ctx, name); err != nil {
		return ResultsPage{}, err
	}
	switch {
	case q.Limit == 0:
		q.Limit = 1000
	case q.Limit < 0 || q.Limit > MaxResults:
		return ResultsPage{}, invalidf("limit", fmt.Sprintf("want 1 to %d, got %d", MaxResults, q.Limit))
	}
	cfg := jetstream.ConsumerConfig{
		FilterSubjects: []string{streams.SubjectPrefix + ".rules." + name + ".results"},
		DeliverPolicy:  jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckNonePolicy,
		MemoryStorage: true, InactiveThreshold: time.Minute,
	}
	switch {
	case q.After > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, q.After+1
	case !q.From.IsZero():
		t := q.From
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	}
	page := ResultsPage{Results: []StoredResult{}}
	err := m.scan.scanConfig(ctx, cfg, 0, func(msg jetstream.Msg) bool {
		md, err := msg.Metadata()
		if err != nil {
			return true
		}
		if len(page.Results) == q.Limit {
			page.Next = page.Results[len(page.Results)-1].Seq
			return false
		}
		var r StoredResult
		if err := json.Unmarshal(msg.Data(), &r.Result); err != nil {
			return true
		}
		if !q.From.IsZero() && r.WindowEnd.Before(q.From) || !q.To.IsZero() && !r.WindowEnd.Before(q.To) {
			return true
		}
		r.Seq, r.StoredAt = md.Sequence.Stream, md.Timestamp.UTC()
		page.Results = append(page.Results, r)
		return true
	})
	return page, err
}

// ResultsSubject matches every rule's results.
const ResultsSubject = streams.SubjectPrefix + ".rules.*.results"

// DefaultMeasurement holds rule results in InfluxDB.
const DefaultMeasurement = "rule_results"

// InfluxMapping stores rule results with a tsdb.Writer: one point per result in measurement
// (default "rule_results"), tagged with the rule ("rule") and each group key under its name
// ("device", "tags.site", ...; a key named "rule" becomes "group_rule"), the values as fields
// (times as the RFC 3339 strings of the JSON; NULL values left out) and the window end as the time. A result
// is always the same point, so writing it twice stores it once.
func InfluxMapping(measurement string) tsdb.Mapping {
	if measurement == "" {
		measurement = DefaultMeasurement
	}
	return tsdb.Mapping{Subject: ResultsSubject, Map: func(env *streams.Envelope) ([]*write.Point, error) {
		var r Result
		if err := json.Unmarshal(env.Payload, &r); err != nil {
			return nil, fmt.Errorf("rule result: %w", err)
		}
		tags := map[string]string{"rule": r.Rule}
		for k, v := range r.Group {
			if k == "rule" {
				k = "group_rule"
			}
			switch x := v.(type) {
			case string:
				if x != "" {
					tags[k] = x
				}
			case float64:
				tags[k] = strconv.FormatFloat(x, 'g', -1, 64)
			case bool:
				tags[k] = strconv.FormatBool(x)
			}
		}
		fields := make(map[string]any, len(r.Values))
		for k, v := range r.Values {
			switch x := v.(type) {
			case float64, bool, string:
				fields[tsdb.StoredField(k)] = x
			}
		}
		if len(fields) == 0 {
			return nil, nil // nothing InfluxDB can store (every value NULL)
		}
		return []*write.Point{write.NewPoint(measurement, tags, fields, r.WindowEnd)}, nil
	}}
}
