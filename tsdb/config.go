package tsdb

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"
)

// Config says where InfluxDB is and how the writer batches and retries. Zero values take the
// defaults documented on each field.
type Config struct {
	// URL of InfluxDB, e.g. "http://localhost:8086". Empty: no InfluxDB (queries are answered
	// from the stream).
	URL string `yaml:"influx_url" json:"influx_url"`
	// Token authenticates with InfluxDB 2.x; for 1.8 it is "user:password" or "" without auth.
	Token string `yaml:"influx_token" json:"influx_token"`
	// Org is the 2.x organisation; "" for 1.8.
	Org string `yaml:"influx_org" json:"influx_org"`
	// Bucket is the 2.x bucket, or "database/retention-policy" for 1.8 (default "iot").
	Bucket string `yaml:"influx_bucket" json:"influx_bucket"`
	// Measurement holds device telemetry (default "telemetry").
	Measurement string `yaml:"influx_measurement" json:"influx_measurement"`

	// BatchSize is the most messages written in one request (default 5000).
	BatchSize int `yaml:"batch_size" json:"batch_size"`
	// FlushInterval is the longest a message waits for its batch to fill (default 100ms). With
	// a backlog, batches are full at once. A negative value writes whatever is available
	// without waiting: lowest latency, more and smaller write requests.
	FlushInterval time.Duration `yaml:"flush_interval" json:"flush_interval"`
	// MaxAckPending bounds the messages handed out and not yet written, and so the writer's
	// memory (default 4 × BatchSize; at least BatchSize).
	MaxAckPending int `yaml:"max_ack_pending" json:"max_ack_pending"`
	// AckWait is how long JetStream waits for an acknowledgement before redelivering (default
	// 10s): when an instance dies, its unwritten messages reach the other writers after this.
	// Messages held through an outage or a slow write are kept alive with progress
	// acknowledgements every AckWait/3, so a short AckWait costs no redeliveries.
	AckWait time.Duration `yaml:"ack_wait" json:"ack_wait"`
	// WriteTimeout bounds one write request (default 10s).
	WriteTimeout time.Duration `yaml:"write_timeout" json:"write_timeout"`
	// MinBackoff and MaxBackoff bound the wait between retries while InfluxDB fails (defaults
	// 100ms and 30s); the wait doubles from one to the other, with jitter.
	MinBackoff time.Duration `yaml:"min_backoff" json:"min_backoff"`
	MaxBackoff time.Duration `yaml:"max_backoff" json:"max_backoff"`
	// QueryTimeout bounds one query (default 30s).
	QueryTimeout time.Duration `yaml:"query_timeout" json:"query_timeout"`
	// LagInterval is how often consumer lag is refreshed for /metrics (default 5s).
	LagInterval time.Duration `yaml:"lag_interval" json:"lag_interval"`
}

// Defaults.
const (
	DefaultBucket      = "iot"
	DefaultMeasurement = "telemetry"
	DefaultBatchSize   = 5000
)

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
	if c.Measurement == "" {
		c.Measurement = DefaultMeasurement
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = 4 * c.BatchSize
	}
	def(&c.FlushInterval, 100*time.Millisecond)
	def(&c.AckWait, 10*time.Second)
	def(&c.WriteTimeout, 10*time.Second)
	def(&c.MinBackoff, 100*time.Millisecond)
	def(&c.MaxBackoff, 30*time.Second)
	def(&c.QueryTimeout, 30*time.Second)
	def(&c.LagInterval, 5*time.Second)
}

// Validate reports the first field that is wrong. Zero values are valid: they mean the default.
func (c Config) Validate() error {
	if c.URL != "" {
		u, err := url.Parse(c.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("tsdb: influx_url %q must be an http or https URL", c.URL)
		}
	}
	switch {
	case c.BatchSize < 0:
		return errors.New("tsdb: batch_size must not be negative")
	case c.MaxAckPending < 0:
		return errors.New("tsdb: max_ack_pending must not be negative")
	case c.MaxAckPending > 0 && c.MaxAckPending < cmp.Or(c.BatchSize, DefaultBatchSize):
		return fmt.Errorf("tsdb: max_ack_pending %d must be at least batch_size", c.MaxAckPending)
	case c.AckWait < 0 || c.AckWait > 0 && c.AckWait < time.Second:
		return errors.New("tsdb: ack_wait must be at least 1s")
	case c.WriteTimeout < 0:
		return errors.New("tsdb: write_timeout must not be negative")
	case c.MinBackoff < 0:
		return errors.New("tsdb: min_backoff must not be negative")
	case c.MaxBackoff < 0:
		return errors.New("tsdb: max_backoff must not be negative")
	case c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff:
		return errors.New("tsdb: min_backoff must not exceed max_backoff")
	case c.QueryTimeout < 0:
		return errors.New("tsdb: query_timeout must not be negative")
	case c.LagInterval < 0:
		return errors.New("tsdb: lag_interval must not be negative")
	}
	return nil
}

// LogValue keeps the token out of logs.
func (c Config) LogValue() slog.Value {
	tok := ""
	if c.Token != "" {
		tok = "[redacted]"
	}
	return slog.GroupValue(slog.String("url", c.URL), slog.String("org", c.Org),
		slog.String("bucket", c.Bucket), slog.String("token", tok))
}
