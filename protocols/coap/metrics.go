package coap

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	metricRequests = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_coap_requests_total",
		Help: "CoAP requests answered, by method and response code (e.g. \"2.04\", \"4.01\").",
	}, []string{"method", "code"})
	metricRequestsDropped = promauto.NewCounter(prometheus.CounterOpts{
		Name: "tributary_coap_requests_dropped_total",
		Help: "CoAP requests dropped because the peer's request queue was full.",
	})
	metricNotifyDropped = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_coap_notifications_dropped_total",
		Help: "CoAP notifications not delivered: queue_full (observer too slow, oldest dropped) or unacknowledged (observer removed).",
	}, []string{"reason"})
	metricObserveRefused = promauto.NewCounter(prometheus.CounterOpts{
		Name: "tributary_coap_observe_refused_total",
		Help: "GET requests with Observe answered without registering, because an observer limit was reached.",
	})
)
