package mqtt_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/protocols/mqtt"
	"github.com/tributary-iot/tributary/streams"
)

// telemetry128 is a 128-byte JSON telemetry payload.
var telemetry128 = func() []byte {
	p := `{"temperature":21.5,"humidity":40.2,"battery":3.71,"door":false,"pad":""}`
	p = strings.Replace(p, `"pad":""`, `"pad":"`+strings.Repeat("x", 128-len(p))+`"`, 1)
	if len(p) != 128 {
		panic(len(p))
	}
	return []byte(p)
}()

// benchDevices connects n devices (registering those beyond d1, d2) over MQTT 3.1.1.
func benchDevices(b *testing.B, h *hub, n int) ([]pahov3.Client, []string) {
	b.Helper()
	clients := make([]pahov3.Client, n)
	ids := make([]string, n)
	for i := range n {
		id := fmt.Sprintf("bench%d", i)
		if _, ok := h.tokens[id]; !ok {
			_, tok, err := h.reg.Create(context.Background(), devices.Device{ID: id})
			if err != nil {
				b.Fatal(err)
			}
			h.tokens[id] = tok
		}
		clients[i], _ = mustV3(b, "tcp://"+h.srv.Addr(), id, id, h.tokens[id])
		ids[i] = id
	}
	return clients, ids
}

// storedCount is the number of messages in the IOT stream.
func storedCount(b *testing.B, h *hub) uint64 {
	s, err := h.bus.JetStream().Stream(context.Background(), streams.StreamMessages)
	if err != nil {
		b.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return info.State.Msgs
}

// BenchmarkPublishQoS1 measures devices publishing QoS 1 telemetry, each waiting for its
// PUBACK, i.e. for JetStream to have stored the message.
func BenchmarkPublishQoS1(b *testing.B) {
	h := startHub(b, mqtt.Config{})
	for _, n := range []int{1, 8} {
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			clients, ids := benchDevices(b, h, n)
			b.SetBytes(int64(len(telemetry128)))
			b.ReportAllocs()
			var wg sync.WaitGroup
			errs := make(chan error, n)
			start := time.Now()
			b.ResetTimer()
			for i, c := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					topic := "devices/" + ids[i] + "/telemetry"
					for j := i; j < b.N; j += n {
						tok := c.Publish(topic, 1, false, telemetry128)
						if !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
							errs <- fmt.Errorf("publish: %v", tok.Error())
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			close(errs)
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// BenchmarkPublishQoS0 measures devices publishing QoS 0 telemetry, until JetStream has stored
// all of it.
func BenchmarkPublishQoS0(b *testing.B) {
	h := startHub(b, mqtt.Config{})
	for _, n := range []int{1, 8} {
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			clients, ids := benchDevices(b, h, n)
			before := storedCount(b, h)
			b.SetBytes(int64(len(telemetry128)))
			b.ReportAllocs()
			var wg sync.WaitGroup
			start := time.Now()
			b.ResetTimer()
			for i, c := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					topic := "devices/" + ids[i] + "/telemetry"
					for j := i; j < b.N; j += n {
						c.Publish(topic, 0, false, telemetry128)
					}
				}()
			}
			wg.Wait()
			deadline := time.Now().Add(time.Minute)
			for storedCount(b, h)-before < uint64(b.N) {
				if time.Now().After(deadline) {
					b.Fatalf("stored %d of %d QoS 0 messages", storedCount(b, h)-before, b.N)
				}
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}
