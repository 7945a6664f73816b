package coap

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/client"
)

// telemetry128 is a 128-byte JSON telemetry payload.
var telemetry128 = func() []byte {
	s := `{"temperature":21.5,"humidity":40.25,"pressure":1013.2,"door":false,"fw":"1.2.3","pad":"`
	s += strings.Repeat("x", 128-len(s)-2) + `"}`
	return []byte(s)
}()

// BenchmarkPostCON measures confirmable POSTs of 128-byte JSON telemetry from go-coap clients,
// each answered only once JetStream (embedded, file storage) has stored the message. One
// client has one request outstanding at a time (NSTART=1), so clients=1 measures latency and
// more clients measure throughput.
func BenchmarkPostCON(b *testing.B) {
	if len(telemetry128) != 128 {
		b.Fatalf("payload is %d bytes, want 128", len(telemetry128))
	}
	h := newHub(b)
	path := "/devices/d1/telemetry"
	q := query("token=" + h.tokens["d1"])
	for _, clients := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			ccs := make([]*client.Conn, clients)
			for i := range ccs {
				ccs[i] = dial(b, h.srv.Addr())
			}
			lat := make([][]time.Duration, clients)
			b.SetBytes(int64(len(telemetry128)))
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for i, cc := range ccs {
				n := b.N / clients
				if i < b.N%clients {
					n++
				}
				lat[i] = make([]time.Duration, 0, n)
				wg.Go(func() {
					for range n {
						t0 := time.Now()
						ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
						resp, err := cc.Post(ctx, path, message.AppJSON, bytes.NewReader(telemetry128), q...)
						cancel()
						if err != nil {
							b.Error(err)
							return
						}
						if resp.Code() != codes.Changed {
							b.Errorf("got %v, want 2.04", resp.Code())
						}
						cc.ReleaseMessage(resp)
						lat[i] = append(lat[i], time.Since(t0))
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			all := slices.Concat(lat...)
			slices.Sort(all)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
			if len(all) > 0 {
				b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
			}
		})
	}
}
