package tlsconf

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// ReloadFailures and HandshakeFailures read the counters, for tests.
func ReloadFailures() float64 { return value(metricReloadFailures) }

func HandshakeFailures(listener string) float64 {
	return value(metricHandshakeFailures.WithLabelValues(listener))
}

func value(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}

// LogLimiter exposes logLimiter to tests.
type LogLimiter struct{ l *logLimiter }

func NewLogLimiter(every time.Duration) LogLimiter { return LogLimiter{&logLimiter{every: every}} }
func (l LogLimiter) Allow() (bool, int)            { return l.l.allow() }

// Rewind moves the last allowed line d into the past.
func (l LogLimiter) Rewind(d time.Duration) { l.l.last = l.l.last.Add(-d) }
