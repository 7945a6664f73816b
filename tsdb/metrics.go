package tsdb

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are labelled with the writer's consumer name, so the telemetry writer and writers of
// other results are told apart.
var (
	metricPoints = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_tsdb_points_written_total",
		Help: "Points written to InfluxDB.",
	}, []string{"consumer"})
	metricMessages = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_tsdb_messages_written_total",
		Help: "Messages whose points were written to InfluxDB and that were then acknowledged.",
	}, []string{"consumer"})
	metricWriteErrors = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_tsdb_write_errors_total",
		Help: "Failed write requests: kind \"unavailable\" (retried with backoff) or \"rejected\" (4xx: the batch is split).",
	}, []string{"consumer", "kind"})
	metricDeadLettered = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_tsdb_dead_lettered_total",
		Help: "Messages sent to dead letters because they could not be mapped or InfluxDB rejected their points.",
	}, []string{"consumer"})
	metricWriteSeconds = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tributary_tsdb_write_seconds",
		Help:    "Duration of successful batch write requests to InfluxDB.",
		Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
	}, []string{"consumer"})
	metricLag = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tributary_tsdb_consumer_lag",
		Help: "Messages in the stream not yet written to InfluxDB (pending plus unacknowledged).",
	}, []string{"consumer"})
	metricUp = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tributary_tsdb_up",
		Help: "1 when the last write to InfluxDB succeeded (or none has failed yet), 0 while it fails.",
	}, []string{"consumer"})
)
