package tlsconf

import (
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
