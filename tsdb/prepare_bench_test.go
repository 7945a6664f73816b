package tsdb

import (
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/streams"
)

// fakeMsg is enough of a jetstream.Msg for prepare.
type fakeMsg struct {
	jetstream.Msg
	m *nats.Msg
}

func (f fakeMsg) Subject() string                           { return f.m.Subject }
func (f fakeMsg) Headers() nats.Header                      { return f.m.Header }
func (f fakeMsg) Data() []byte                              { return f.m.Data }
func (f fakeMsg) Metadata() (*jetstream.MsgMetadata, error) { return &jetstream.MsgMetadata{}, nil }

// BenchmarkPrepare: decoding a message and encoding its point as line protocol.
func BenchmarkPrepare(b *testing.B) {
	w := &Writer{m: TelemetryMapping(nil, ""), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	msgs := make([]jetstream.Msg, 5000)
	for i := range msgs {
		env := &streams.Envelope{DeviceID: fmt.Sprintf("bench-%d", i%100), Topic: fmt.Sprintf("devices/bench-%d/telemetry", i%100),
			ContentType: "application/json", Payload: fmt.Appendf(nil, `{"temperature":%.2f,"humidity":%.1f,"battery":%.3f}`, 20.5, 40.1, 3.7)}
		env.Stamp(time.Now())
		m, err := env.ToMsg()
		if err != nil {
			b.Fatal(err)
		}
		msgs[i] = fakeMsg{m: m}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		w.prepareRange(newBatch(msgs).items)
	}
	b.ReportMetric(float64(b.N*len(msgs))/b.Elapsed().Seconds(), "msgs/s")
}
