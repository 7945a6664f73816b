package mqtt

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// metricDropped counts messages the broker did not deliver to a subscriber because its write
// queue (Config.MaxPendingWrites) was full. Messages beyond a subscriber's in-flight window
// (Config.MaxInflight) are logged by the broker as "client store quota reached".
var metricDropped = promauto.NewCounter(prometheus.CounterOpts{
	Name: "tributary_mqtt_dropped_total",
	Help: "Messages not delivered to an MQTT subscriber because it read too slowly.",
})
