package rules

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	metricEvents = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_rule_events_total",
		Help: "Events processed by a rule, by what the engine did with them (accepted, filtered, late, rejected).",
	}, []string{"rule", "disposition"})
	metricResults = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_rule_results_total",
		Help: "Results a rule published on rules/<name>/results.",
	}, []string{"rule"})
	metricAlerts = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_rule_notifications_total",
		Help: "Notifications a rule published (rules/<name>/alerts and its outputs), by state (result, fired, cleared).",
	}, []string{"rule", "state"})
	metricSkipped = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_rule_duplicates_skipped_total",
		Help: "Outputs re-emitted after a restart that were already in the stream and so not published again.",
	}, []string{"rule"})
	metricLag = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tributary_rule_consumer_lag",
		Help: "Messages of a rule's source stored but not yet processed by the rule.",
	}, []string{"rule"})
	metricOpen = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tributary_rule_open_windows",
		Help: "Windows of a rule holding state.",
	}, []string{"rule"})
	metricGroups = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tributary_rule_groups",
		Help: "Groups (e.g. devices) a rule holds state for: open windows, or the histories of its anomaly functions until they expire.",
	}, []string{"rule"})
	metricCheckpoints = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_rule_checkpoints_total",
		Help: "Checkpoints a rule stored.",
	}, []string{"rule"})
	metricWebhooks = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_rule_webhook_deliveries_total",
		Help: "Webhook requests of rules, by outcome: delivered, failed (an attempt that will be retried), dead_lettered (the last attempt failed).",
	}, []string{"rule", "outcome"})
)

// ruleMetrics are one rule's bound metrics, so the hot path does no label lookups.
type ruleMetrics struct {
	accepted, filtered, late, rejected prometheus.Counter
	results, skipped, checkpoints      prometheus.Counter
	lag, open, groups                  prometheus.Gauge
}

func newRuleMetrics(rule string) *ruleMetrics {
	return &ruleMetrics{
		accepted:    metricEvents.WithLabelValues(rule, "accepted"),
		filtered:    metricEvents.WithLabelValues(rule, "filtered"),
		late:        metricEvents.WithLabelValues(rule, "late"),
		rejected:    metricEvents.WithLabelValues(rule, "rejected"),
		results:     metricResults.WithLabelValues(rule),
		skipped:     metricSkipped.WithLabelValues(rule),
		checkpoints: metricCheckpoints.WithLabelValues(rule),
		lag:         metricLag.WithLabelValues(rule),
		open:        metricOpen.WithLabelValues(rule),
		groups:      metricGroups.WithLabelValues(rule),
	}
}

// forgetMetrics removes a deleted rule's series.
func forgetMetrics(rule string) {
	for _, v := range []*prometheus.CounterVec{metricEvents, metricResults, metricAlerts, metricSkipped, metricCheckpoints, metricWebhooks} {
		v.DeletePartialMatch(prometheus.Labels{"rule": rule})
	}
	metricLag.DeleteLabelValues(rule)
	metricOpen.DeleteLabelValues(rule)
	metricGroups.DeleteLabelValues(rule)
}
