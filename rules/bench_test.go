package rules_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/hub/hubtest"
	"github.com/tributary-iot/tributary/rules/rulesbench"
)

// BenchmarkRules100 runs 100 rules over one device stream fed by 10 MQTT QoS 0 devices, as
// fast as the hub stores their messages ("max") and at fixed rates, and reports whether the
// rules kept up and how late their results were:
//
//	go test ./rules -run '^$' -bench Rules100 -benchtime 1x
func BenchmarkRules100(b *testing.B) {
	h := hubtest.Start(b)
	target := rulesbench.Target{HTTP: h.HTTPAddr(), MQTT: h.MQTTAddr(), NATS: h.NATSURL(), APIKey: hubtest.APIKey}
	run := 0
	for _, rate := range []int{0, 5000, 10000} {
		name := "max"
		if rate > 0 {
			name = fmt.Sprintf("rate=%d", rate)
		}
		b.Run(name, func(b *testing.B) {
			for range b.N {
				run++
				rep, err := rulesbench.Run(context.Background(), target, rulesbench.Params{Rules: 100, Devices: 10, Rate: rate,
					Publish: 10 * time.Second, Prefix: fmt.Sprintf("rb%d", run)}, os.Stderr)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(rep.IngestPerSec, "msgs/s")
				b.ReportMetric(rep.RuleEventsPerSec, "rule-events/s")
				b.ReportMetric(rep.ResultLagP99, "result-lag-p99-ms")
				b.ReportMetric(rep.MaxConsumerLag, "max-lag-msgs")
				b.ReportMetric(rep.CatchUpMS, "catch-up-ms")
			}
		})
	}
}
