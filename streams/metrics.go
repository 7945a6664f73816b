package streams

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	metricStored = promauto.NewCounter(prometheus.CounterOpts{
		Name: "tributary_messages_stored_total",
		Help: "Messages handed to JetStream for storing in the IOT stream (duplicates excluded for synchronous publishes).",
	})
	metricAsyncFailed = promauto.NewCounter(prometheus.CounterOpts{
		Name: "tributary_publish_async_failed_total",
		Help: "Asynchronous (QoS 0 / non-confirmable) publishes JetStream did not store.",
	})
	metricPublishSeconds = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "tributary_publish_seconds",
		Help:    "Time from publish to JetStream store acknowledgement for synchronous publishes.",
		Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1},
	})
)
