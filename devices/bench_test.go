package devices_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/hub/hubtest"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

// benchDevices is the registry size of the benchmarks below.
const benchDevices = 100_000

// benchDevice is device i of a benchmark fleet: types, tags and a location, like a real one.
func benchDevice(i int) devices.Device {
	return devices.Device{
		ID:       fmt.Sprintf("dev-%06d", i),
		Name:     fmt.Sprintf("Device %d", i),
		Type:     []string{"meter", "valve", "pump", "thermostat"}[i%4],
		Tags:     map[string]string{"site": fmt.Sprintf("site-%d", i%50), "floor": fmt.Sprint(i % 7)},
		Location: &devices.Location{Lat: 59 + float64(i%1000)/1000, Lon: 10 + float64(i%997)/1000},
	}
}

// fill creates n devices in reg, 10,000 per batch, and returns their tokens.
func fill(tb testing.TB, reg *devices.Registry, n int) []string {
	tb.Helper()
	tokens := make([]string, 0, n)
	for start := 0; start < n; start += devices.MaxBatch {
		batch := make([]devices.Device, 0, devices.MaxBatch)
		for i := start; i < min(n, start+devices.MaxBatch); i++ {
			batch = append(batch, benchDevice(i))
		}
		created, err := reg.CreateMany(context.Background(), batch)
		if err != nil {
			tb.Fatal(err)
		}
		for _, c := range created {
			tokens = append(tokens, c.Token)
		}
	}
	return tokens
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkRegistry100k: lookups and authentications per second with 100,000 devices
// registered, list pages, and the memory the in-memory view takes per device.
//
//	go test -run '^$' -bench BenchmarkRegistry100k -benchtime 2s ./devices
func BenchmarkRegistry100k(b *testing.B) {
	bus := streamstest.New(b)
	ctx := context.Background()
	log := streamstest.Logger(b)
	reg, err := devices.New(ctx, bus.JetStream(), devices.Config{}, log)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	tokens := fill(b, reg, benchDevices)
	b.Logf("created %d devices in %v (%.0f/s)", benchDevices, time.Since(start).Round(time.Millisecond), benchDevices/time.Since(start).Seconds())

	// Memory: a second registry loads the same devices from KV; the heap grows by its view.
	before := heapInUse()
	start = time.Now()
	reg2, err := devices.New(ctx, bus.JetStream(), devices.Config{}, log)
	if err != nil {
		b.Fatal(err)
	}
	loaded := time.Since(start)
	after := heapInUse()
	perDevice := float64(after-before) / benchDevices
	if reg2.Count() != benchDevices {
		b.Fatalf("loaded %d devices", reg2.Count())
	}
	b.Logf("a fresh registry loads %d devices in %v; view: %.1f MiB, %.0f bytes per device", benchDevices, loaded.Round(time.Millisecond), float64(after-before)/(1<<20), perDevice)
	runtime.KeepAlive(reg2)

	ids := make([]string, benchDevices)
	for i := range ids {
		ids[i] = benchDevice(i).ID
	}
	b.Run("Get", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			r := rand.New(rand.NewPCG(rand.Uint64(), 1))
			for pb.Next() {
				if _, err := reg.Get(ids[r.IntN(len(ids))]); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
		b.ReportMetric(perDevice, "bytes/device")
	})
	b.Run("Authenticate", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			r := rand.New(rand.NewPCG(rand.Uint64(), 2))
			for pb.Next() {
				i := r.IntN(len(ids))
				if err := reg.AuthenticateDevice(ctx, ids[i], tokens[i]); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "auths/s")
	})
	b.Run("AuthenticateWrongToken", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if err := reg.AuthenticateDevice(ctx, ids[i%len(ids)], "wrong"); err == nil {
				b.Fatal("wrong token accepted")
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "auths/s")
	})
	b.Run("ListPage100", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			page, _ := reg.List(devices.Filter{After: ids[(i*7919)%len(ids)], Limit: 100})
			if len(page) == 0 && (i*7919)%len(ids) < len(ids)-1 {
				b.Fatal("empty page")
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pages/s")
	})
	b.Run("ListFilterTypeTag", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			page, _ := reg.List(devices.Filter{Type: "pump", Tags: map[string]string{"site": "site-6"}, Limit: 100})
			if len(page) == 0 {
				b.Fatal("no match")
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pages/s")
	})
	b.Run("ListSearchAll", func(b *testing.B) {
		for b.Loop() {
			// A free-text query matching nothing scans the whole registry.
			if page, _ := reg.List(devices.Filter{Query: "no-such-device", Limit: 100}); len(page) != 0 {
				b.Fatal("matched")
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "scans/s")
	})
}

// BenchmarkMQTTConnect100k: the CONNECT → CONNACK round trip of a device authenticating against
// a hub whose registry holds 100,000 devices, over an established TCP connection to the real
// broker (the TCP handshake is reported separately). Reports p50 and p99.
//
//	go test -run '^$' -bench BenchmarkMQTTConnect100k -benchtime 3000x ./devices
func BenchmarkMQTTConnect100k(b *testing.B) {
	h := hubtest.Start(b)
	tokens := make([]string, 0, benchDevices)
	start := time.Now()
	for s := 0; s < benchDevices; s += devices.MaxBatch {
		batch := make([]map[string]any, 0, devices.MaxBatch)
		for i := s; i < s+devices.MaxBatch; i++ {
			d := benchDevice(i)
			batch = append(batch, map[string]any{"id": d.ID, "type": d.Type, "tags": d.Tags})
		}
		var res struct {
			Devices []struct{ Token string }
		}
		if code := h.Do("POST", "/api/v1/devices:bulk", batch, &res); code != 201 {
			b.Fatalf("bulk create: %d", code)
		}
		for _, d := range res.Devices {
			tokens = append(tokens, d.Token)
		}
	}
	b.Logf("registered %d devices through POST /api/v1/devices:bulk in %v", benchDevices, time.Since(start).Round(time.Millisecond))

	var connect, dial []time.Duration
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 64)
	for i := 0; b.Loop(); i++ {
		n := r.IntN(benchDevices)
		id := benchDevice(n).ID
		t0 := time.Now()
		conn, err := net.Dial("tcp", h.MQTTAddr())
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := conn.Write(connectPacket(id, id, tokens[n], 30)); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(conn, buf[:4]); err != nil || buf[0] != 0x20 || buf[3] != 0 {
			b.Fatalf("CONNACK %x, %v", buf[:4], err)
		}
		t2 := time.Now()
		dial, connect = append(dial, t1.Sub(t0)), append(connect, t2.Sub(t1))
		conn.Write([]byte{0xE0, 0}) // DISCONNECT
		conn.Close()
	}
	// Every connection and disconnection is a liveness change (KV write and status event),
	// written behind the broker's back: how long until the last one is?
	b.StopTimer()
	settle := time.Now()
	for {
		var l struct{ Devices []json.RawMessage }
		h.Do("GET", "/api/v1/devices?status=online&limit=1", nil, &l)
		if len(l.Devices) == 0 || time.Since(settle) > time.Minute {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.ReportMetric(time.Since(settle).Seconds(), "liveness-settle-s")
	slices.Sort(connect)
	slices.Sort(dial)
	pct := func(d []time.Duration, p float64) float64 {
		return float64(d[min(len(d)-1, int(float64(len(d))*p))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(connect, 0.50), "p50-ms")
	b.ReportMetric(pct(connect, 0.99), "p99-ms")
	b.ReportMetric(pct(dial, 0.99), "tcp-dial-p99-ms")
	b.ReportMetric(float64(len(connect))/b.Elapsed().Seconds(), "connects/s")
}

// BenchmarkShadowReported: reported-state messages taken into shadows per second (the
// durable, pinned consumer: KV read + compare-and-set per message), 100 devices.
//
//	go test -run '^$' -bench BenchmarkShadowReported -benchtime 5000x ./devices
func BenchmarkShadowReported(b *testing.B) {
	bus := streamstest.New(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := streamstest.Logger(b)
	reg, err := devices.New(ctx, bus.JetStream(), devices.Config{}, log)
	if err != nil {
		b.Fatal(err)
	}
	mgr, err := devices.NewManager(ctx, bus.JetStream(), reg, bus, devices.ManagerConfig{}, log)
	if err != nil {
		b.Fatal(err)
	}
	const n = 100
	for i := range n {
		if _, _, err := reg.Create(ctx, benchDevice(i)); err != nil {
			b.Fatal(err)
		}
	}
	go reg.Run(ctx)
	go mgr.Run(ctx)
	i := 0
	var start time.Time
	for b.Loop() {
		if i == 0 {
			start = time.Now()
		}
		id := benchDevice(i % n).ID
		env := &streams.Envelope{DeviceID: id, Topic: devices.ReportedTopic(id), ContentType: "application/json", Protocol: "mqtt",
			Payload: fmt.Appendf(nil, `{"seq":%d,"temp":%d}`, i, i%40)}
		env.Stamp(time.Now())
		if err := bus.PublishAsync(env); err != nil {
			b.Fatal(err)
		}
		i++
	}
	want := uint64(i)
	for {
		var sum uint64
		for d := range n {
			s, err := mgr.Shadows.Get(ctx, benchDevice(d).ID)
			if err != nil {
				b.Fatal(err)
			}
			sum += s.ReportedVersion
		}
		if sum >= want {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.ReportMetric(float64(want)/time.Since(start).Seconds(), "reports/s")
}
