package protocols

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	metricIn = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_messages_in_total",
		Help: "Messages received from devices and applications, by protocol.",
	}, []string{"protocol"})
	metricRejected = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_messages_rejected_total",
		Help: "Messages refused, by protocol and reason.",
	}, []string{"protocol", "reason"})
	metricDeadLettered = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_dead_letters_total",
		Help: "Messages written to the dead-letter stream, by reason.",
	}, []string{"reason"})
	// Deliveries counts fan-out deliveries to subscribers; adapters increment it.
	Deliveries = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_fanout_deliveries_total",
		Help: "Messages delivered to live subscribers, by protocol.",
	}, []string{"protocol"})
	// Connected gauges connected clients; adapters set it.
	Connected = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tributary_connected_clients",
		Help: "Connected clients (MQTT connections, CoAP observers, SSE and WebSocket streams), by protocol.",
	}, []string{"protocol"})
)
