package lease

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	metricHeld = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tributary_leases_held",
		Help: "Leases this instance holds, by kind (rule).",
	}, []string{"kind"})
	metricAcquired = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_lease_acquisitions_total",
		Help: "Leases this instance took, by kind and how the lease had become free: new, released (handed back cleanly) or expired (a takeover: its holder stopped renewing).",
	}, []string{"kind", "how"})
	metricLost = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_lease_losses_total",
		Help: "Leases this instance lost (not renewed in time, or taken by another holder), by kind.",
	}, []string{"kind"})
	metricHandedOver = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_lease_handovers_total",
		Help: "Leases this instance handed to a less loaded instance, by kind.",
	}, []string{"kind"})
)
