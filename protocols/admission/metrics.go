package admission

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	metricDelayed = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_admission_delayed_total",
		Help: "Messages admitted after waiting for their rate limit (MQTT QoS 1/2 back-pressure), by protocol.",
	}, []string{"protocol"})
	// MetricRefused counts what admission control refused, by protocol and reason
	// (rate_limited, quota_exceeded, connections, auth_throttled, subscriptions, topic_levels,
	// api_rate). Adapters add the reasons only they can see.
	MetricRefused = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_admission_refused_total",
		Help: "Messages, connections and requests refused by admission control, by protocol and reason.",
	}, []string{"protocol", "reason"})
	// MetricPeers is how many other hub instances report their demand on shared limits (see
	// share.go); the hub's wiring sets it.
	MetricPeers = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "tributary_admission_peers",
		Help: "Other hub instances sharing tenants' and API keys' limits with this one (reporting their demand).",
	})
	metricAuthFailures = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_auth_failures_total",
		Help: "Failed authentications, by protocol.",
	}, []string{"protocol"})
	metricBlockedSources = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "tributary_auth_blocked_sources",
		Help: "Source addresses currently refused for too many failed authentications.",
	})
	metricConnections = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tributary_tenant_connections",
		Help: "Current device connections (MQTT), by tenant.",
	}, []string{"tenant"})
)

// Reason labels of MetricRefused.
const (
	ReasonRateLimited   = "rate_limited"
	ReasonQuotaExceeded = "quota_exceeded"
	ReasonConnections   = "connections"
	ReasonAuthThrottled = "auth_throttled"
	ReasonSubscriptions = "subscriptions"
	ReasonTopicLevels   = "topic_levels"
	ReasonAPIRate       = "api_rate"
)

func reasonOf(kind error) string {
	switch kind {
	case ErrRateLimited:
		return ReasonRateLimited
	case ErrQuotaExceeded:
		return ReasonQuotaExceeded
	case ErrTooManyConnections:
		return ReasonConnections
	case ErrAuthThrottled:
		return ReasonAuthThrottled
	}
	return "other"
}
