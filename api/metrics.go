package api

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/tributary-iot/tributary/protocols"
)

var (
	metricHTTPUnauthorized = promauto.NewCounter(prometheus.CounterOpts{
		Name: "tributary_http_unauthorized_total",
		Help: "HTTP API requests refused for a missing or invalid API key.",
	})
	metricHTTPDenied = promauto.NewCounter(prometheus.CounterOpts{
		Name: "tributary_http_denied_total",
		Help: "HTTP API requests refused for a missing scope or another tenant's object.",
	})
	metricLiveSkipped = promauto.NewCounter(prometheus.CounterOpts{
		Name: "tributary_live_skipped_total",
		Help: "Messages skipped for slow live (SSE/WebSocket) subscribers.",
	})
	metricLiveClients   = protocols.Connected.WithLabelValues("sse")
	metricLiveDelivered = protocols.Deliveries.WithLabelValues("sse")
)
