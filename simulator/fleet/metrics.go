package fleet

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	metricSent = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_simulation_messages_total",
		Help: "Messages virtual devices sent, by protocol.",
	}, []string{"protocol"})
	metricErrors = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_simulation_errors_total",
		Help: "Virtual device errors, by kind (provision, connect, publish).",
	}, []string{"kind"})
	metricDevices = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "tributary_simulation_connected_devices",
		Help: "Virtual devices connected now.",
	})
)
