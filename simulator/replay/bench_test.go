package replay_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/hub/hubtest"
	"github.com/tributary-iot/tributary/simulator"
	"github.com/tributary-iot/tributary/simulator/replay"
	"github.com/tributary-iot/tributary/simulator/simtest"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

// benchRecording is how many messages the max-speed benchmark replays per iteration.
const benchRecording = 200_000

// BenchmarkReplayMax measures replay throughput at speed "max" into the sandbox: on a bare
// JetStream bus (the replay engine's own ceiling) and in a running hub, whose MQTT and CoAP
// fan-out consumers read every stored message too. Run with -benchtime=3x.
func BenchmarkReplayMax(b *testing.B) {
	b.Run("bus", func(b *testing.B) {
		bus := streamstest.New(b)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		m, err := replay.New(ctx, bus.Conn(), replay.Config{}, simulator.NewResolver(bus.JetStream(), nil, nil), streamstest.Logger(b))
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- m.Run(ctx) }()
		defer func() { cancel(); <-done }()
		rec := simtest.Record(b, bus.JetStream(), []string{"d1", "d2", "d3", "d4"}, benchRecording, time.Minute, 1)
		runMax(b, rec, func(from time.Time) (string, func() replay.Job) {
			j, err := m.Start(ctx, replay.Request{Selection: simulator.Selection{From: from}, Speed: replay.Max})
			if err != nil {
				b.Fatal(err)
			}
			return j.ID, func() replay.Job {
				j, err := m.Get(ctx, j.ID)
				if err != nil {
					b.Fatal(err)
				}
				return j
			}
		}, bus.JetStream())
	})
	b.Run("hub", func(b *testing.B) {
		h := hubtest.Start(b)
		_, js := simtest.Connect(b, h)
		rec := simtest.Record(b, js, []string{"d1", "d2", "d3", "d4"}, benchRecording, time.Minute, 1)
		runMax(b, rec, func(from time.Time) (string, func() replay.Job) {
			j := simtest.StartReplay(b, h, map[string]any{"from": from.Format(time.RFC3339Nano), "speed": "max"})
			return j.ID, func() replay.Job { return simtest.GetJob(b, h, j.ID) }
		}, js)
	})
}

func runMax(b *testing.B, rec simtest.Recording, start func(from time.Time) (string, func() replay.Job), js jetstream.JetStream) {
	b.ReportAllocs()
	b.SetBytes(int64(len(rec.Envs[0].Payload)))
	var total time.Duration
	for b.Loop() {
		begin := time.Now()
		id, get := start(rec.Base.Add(-time.Second))
		var j replay.Job
		for j = get(); j.Status == replay.Running; j = get() {
			time.Sleep(5 * time.Millisecond)
		}
		el := time.Since(begin)
		total += el
		if j.Status != replay.Done || j.Progress.Sent != uint64(len(rec.Envs)) {
			b.Fatalf("replay %s: %s, sent %d of %d (%s)", id, j.Status, j.Progress.Sent, len(rec.Envs), j.Error)
		}
		if n := simtest.StreamCount(b, js, "IOT", replay.SandboxSubject(id)); n != uint64(len(rec.Envs)) {
			b.Fatalf("sandbox holds %d messages, want %d", n, len(rec.Envs))
		}
	}
	b.ReportMetric(float64(len(rec.Envs))*float64(b.N)/total.Seconds(), "msgs/s")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkReplayPacing replays 10 seconds of traffic (2,000 messages, random gaps) at speed 1
// in a running hub and reports the pacing error: release time against the recorded offset (as
// the job measures it) and arrival time at a NATS subscriber (common latency removed), p50 and
// p99 in milliseconds. Run with -benchtime=1x.
func BenchmarkReplayPacing(b *testing.B) {
	h := hubtest.Start(b)
	nc, js := simtest.Connect(b, h)
	rec := simtest.Record(b, js, []string{"d1", "d2", "d3", "d4"}, 2000, 10*time.Second, 2)
	var rel50, rel99, arr50, arr99 []float64
	for b.Loop() {
		c := simtest.Collect(b, nc, "iot.sandbox.>")
		job := simtest.StartReplay(b, h, map[string]any{"from": rec.Base.Add(-time.Second).Format(time.RFC3339Nano), "speed": 1})
		job = simtest.WaitJob(b, h, job.ID, time.Minute, "done", func(j replay.Job) bool { return j.Status == replay.Done })
		got := c.Snapshot()
		if len(got) != len(rec.Envs) {
			b.Fatalf("got %d messages, want %d", len(got), len(rec.Envs))
		}
		byID := rec.ByID()
		ds := make([]time.Duration, len(got))
		for i, a := range got {
			want := byID[a.Env.Meta["replay_of"]].EventTime.Sub(rec.Base)
			ds[i] = a.At.Sub(got[0].At) - want
		}
		sorted := slices.Clone(ds)
		slices.Sort(sorted)
		med := simtest.Percentile(sorted, 0.5)
		errs := make([]time.Duration, len(ds))
		for i, d := range ds {
			errs[i] = max(d-med, med-d)
		}
		slices.Sort(errs)
		rel50, rel99 = append(rel50, job.Pacing.P50Ms), append(rel99, job.Pacing.P99Ms)
		arr50 = append(arr50, ms(simtest.Percentile(errs, 0.5)))
		arr99 = append(arr99, ms(simtest.Percentile(errs, 0.99)))
	}
	b.ReportMetric(mean(rel50), "release-p50-ms")
	b.ReportMetric(mean(rel99), "release-p99-ms")
	b.ReportMetric(mean(arr50), "arrival-p50-ms")
	b.ReportMetric(mean(arr99), "arrival-p99-ms")
	b.ReportMetric(0, "ns/op")
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func mean(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

var _ = fmt.Sprint
