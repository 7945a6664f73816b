package replay

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	metricMessages = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_replay_messages_total",
		Help: "Messages published by replays, by target (sandbox, live).",
	}, []string{"target"})
	metricFailed = promauto.NewCounter(prometheus.CounterOpts{
		Name: "tributary_replay_publish_failed_total",
		Help: "Replayed messages the stream did not acknowledge.",
	})
	metricPacing = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "tributary_replay_pacing_error_seconds",
		Help:    "How late replayed messages were released against their recorded offset (finite speeds).",
		Buckets: []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 1},
	})
	metricJobs = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tributary_replay_jobs",
		Help: "Replay jobs this instance runs, by status (running, paused).",
	}, []string{"status"})
)
