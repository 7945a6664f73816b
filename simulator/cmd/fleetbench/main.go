// Command fleetbench finds how large a virtual fleet one process sustains: it starts a hub in a
// child process on this machine (so each process has its own file descriptors and CPU accounting),
// runs fleets of growing size in this process as real MQTT clients at a fixed rate per device,
// and reports, for each size, the offered rate, the rate the devices achieved, the rate the hub
// stored, and how late the devices' messages were produced.
//
//	go run ./simulator/cmd/fleetbench -devices 10000            # one size
//	go run ./simulator/cmd/fleetbench -devices 2000,5000,10000  # several; reports the largest sustained
//
// A size is sustained when, over the measurement window after warm-up, the devices sent and the
// hub stored at least 99% of the offered rate and the 99th percentile of the send lag stayed
// under -max-lag.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/hub/hubproc"
	"github.com/tributary-iot/tributary/simulator"
	"github.com/tributary-iot/tributary/simulator/fleet"
	"github.com/tributary-iot/tributary/streams"
)

const apiKey = "fleetbench-key"

func main() {
	serve := flag.Bool("serve", false, "internal: run the hub and print its addresses (child process)")
	sizes := flag.String("devices", "10000", "comma-separated fleet sizes to try, smallest first")
	rate := flag.Float64("rate", 1, "messages per second per device")
	qos := flag.Int("qos", 0, "MQTT QoS (0 or 1)")
	warmup := flag.Duration("warmup", 10*time.Second, "time after all devices connected before measuring")
	measure := flag.Duration("measure", 20*time.Second, "measurement window")
	maxLag := flag.Duration("max-lag", time.Second, "largest p99 send lag that counts as sustained")
	connectRate := flag.Float64("connect-rate", 2000, "device connections per second while starting")
	jsonOut := flag.Bool("json", false, "print the results as JSON")
	cpuProfile := flag.String("cpuprofile", "", "write this process's CPU profile here (the hub's: FLEETBENCH_HUB_CPUPROFILE)")
	flag.Parse()
	if *serve {
		if err := hubproc.Serve(hubproc.Options{APIKey: apiKey, CPUProfile: os.Getenv("FLEETBENCH_HUB_CPUPROFILE")}); err != nil {
			fmt.Fprintln(os.Stderr, "fleetbench serve:", err)
			os.Exit(1)
		}
		return
	}
	hubproc.RaiseFileLimit()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "fleetbench:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	var results []result
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "fleetbench: -devices: %q is not a positive number\n", s)
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "fleet of %d devices at %g msg/s each (QoS %d)...\n", n, *rate, *qos)
		r, err := run(ctx, params{devices: n, rate: *rate, qos: *qos, warmup: *warmup, measure: *measure, maxLag: *maxLag, connectRate: *connectRate})
		if err != nil {
			fmt.Fprintln(os.Stderr, "fleetbench:", err)
			os.Exit(1)
		}
		results = append(results, r)
		if ctx.Err() != nil {
			break
		}
	}
	if *jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(results)
		return
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "devices\tconnect s\toffered/s\tsent/s\tstored/s\tlag p50 ms\tlag p99 ms\terrors\tfleet RSS MB\thub RSS MB\tsustained\t")
	largest := 0
	for _, r := range results {
		fmt.Fprintf(tw, "%d\t%.1f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%d\t%.0f\t%.0f\t%v\t\n", r.Devices, r.ConnectSeconds, r.Offered, r.SentPerSec, r.StoredPerSec,
			r.LagP50Ms, r.LagP99Ms, r.Errors, r.FleetRSSMB, r.HubRSSMB, r.Sustained)
		if r.Sustained {
			largest = max(largest, r.Devices)
		}
	}
	tw.Flush()
	fmt.Printf("largest fleet sustained: %d devices at %g msg/s each over MQTT QoS %d (%d cores)\n", largest, *rate, *qos, runtime.NumCPU())
}

type params struct {
	devices     int
	rate        float64
	qos         int
	warmup      time.Duration
	measure     time.Duration
	maxLag      time.Duration
	connectRate float64
}

type result struct {
	Devices        int     `json:"devices"`
	ConnectSeconds float64 `json:"connect_seconds"`
	Offered        float64 `json:"offered_per_sec"`
	SentPerSec     float64 `json:"sent_per_sec"`
	StoredPerSec   float64 `json:"stored_per_sec"`
	LagP50Ms       float64 `json:"lag_p50_ms"`
	LagP99Ms       float64 `json:"lag_p99_ms"`
	Errors         uint64  `json:"errors"`
	FleetRSSMB     float64 `json:"fleet_rss_mb"`
	HubRSSMB       float64 `json:"hub_rss_mb"`
	Sustained      bool    `json:"sustained"`
}

func run(ctx context.Context, p params) (result, error) {
	child, err := hubproc.Start(ctx, "-serve")
	if err != nil {
		return result{}, err
	}
	defer child.Stop()
	nc, err := nats.Connect(child.Addrs.NATS)
	if err != nil {
		return result{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return result{}, err
	}
	stream, err := js.Stream(ctx, streams.StreamMessages)
	if err != nil {
		return result{}, err
	}
	stored := func() (uint64, error) {
		info, err := stream.Info(ctx)
		if err != nil {
			return 0, err
		}
		return info.State.Msgs, nil
	}

	seed := int64(1)
	def := fleet.Definition{
		Name: "bench", Seed: &seed, ConnectRate: p.connectRate,
		Duration: simulator.Duration(p.warmup + p.measure + 2*time.Second),
		Profiles: []fleet.Profile{{
			Name: "dev", Devices: p.devices, IDPrefix: "bench", Protocol: "mqtt", QoS: p.qos, Rate: fleet.Rate(p.rate),
			Fields: map[string]fleet.Signal{"temperature": {Model: "sine", Mean: 20, Amplitude: 2, Period: simulator.Duration(time.Minute), Noise: 0.1}},
		}},
	}
	data, _ := json.Marshal(def)
	if def, err = fleet.Parse(data, "json"); err != nil { // the same checks as the API
		return result{}, err
	}
	runner := fleet.NewRunner(fleet.NewPlan(def, seed), fleet.Options{
		Endpoints:   fleet.Endpoints{MQTT: child.Addrs.MQTT},
		Provisioner: &apiProvisioner{base: "http://" + child.Addrs.HTTP},
		Concurrency: 128,
		Log:         slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	begin := time.Now()
	go func() { done <- runner.Run(rctx) }()

	// Wait for the devices to be connected and sending.
	for runner.StartedAt().IsZero() {
		select {
		case err := <-done:
			if err == nil {
				err = errors.New("the fleet ended before it started")
			}
			return result{}, err
		case <-ctx.Done():
			return result{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	res := result{Devices: p.devices, Offered: float64(p.devices) * p.rate, ConnectSeconds: runner.StartedAt().Sub(begin).Seconds()}
	fmt.Fprintf(os.Stderr, "  %d devices provisioned and connected in %.1fs; warming up for %s\n", p.devices, res.ConnectSeconds, p.warmup)
	select {
	case <-time.After(p.warmup):
	case err := <-done:
		return result{}, fmt.Errorf("the fleet ended during warm-up: %v", err)
	}
	s0, st0, t0 := runner.Stats(), must(stored()), time.Now()
	select {
	case <-time.After(p.measure):
	case err := <-done:
		return result{}, fmt.Errorf("the fleet ended while measuring: %v", err)
	}
	s1, st1, t1 := runner.Stats(), must(stored()), time.Now()
	el := t1.Sub(t0).Seconds()
	res.SentPerSec = float64(s1.Sent-s0.Sent) / el
	res.StoredPerSec = float64(st1-st0) / el
	res.LagP50Ms, res.LagP99Ms, res.Errors = s1.LagP50Ms, s1.LagP99Ms, s1.Errors
	res.FleetRSSMB = rssMB(os.Getpid())
	res.HubRSSMB = rssMB(child.PID)
	res.Sustained = res.SentPerSec >= 0.99*res.Offered && res.StoredPerSec >= 0.99*res.Offered && res.LagP99Ms <= float64(p.maxLag.Milliseconds())
	cancel()
	<-done
	fmt.Fprintf(os.Stderr, "  sent %.0f/s, stored %.0f/s of %.0f/s offered; lag p99 %.0fms\n", res.SentPerSec, res.StoredPerSec, res.Offered, res.LagP99Ms)
	return res, nil
}

func must(n uint64, err error) uint64 {
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleetbench:", err)
		os.Exit(1)
	}
	return n
}

// apiProvisioner registers the virtual devices over the hub's HTTP API.
type apiProvisioner struct{ base string }

func (a *apiProvisioner) do(ctx context.Context, method, path string, body, out any) (int, error) {
	var r io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, r)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode, nil
}

func (a *apiProvisioner) Check(ctx context.Context, fleetName, id string) error { return nil } // a fresh hub

func (a *apiProvisioner) Provision(ctx context.Context, fleetName string, d devices.Device) (string, error) {
	body := map[string]any{"id": d.ID, "name": d.Name, "type": d.Type, "tags": map[string]string{fleet.TagFleet: fleetName}}
	var out struct{ Token, Error string }
	code, err := a.do(ctx, "POST", "/api/v1/devices", body, &out)
	if err != nil {
		return "", err
	}
	if code != http.StatusCreated {
		return "", fmt.Errorf("create device %s: %d %s", d.ID, code, out.Error)
	}
	return out.Token, nil
}

func (a *apiProvisioner) Remove(ctx context.Context, fleetName, id string) error {
	_, err := a.do(ctx, "DELETE", "/api/v1/devices/"+id, nil, nil)
	return err
}

func rssMB(pid int) float64 {
	b, err := hubproc.RSS(pid)
	if err != nil {
		return 0
	}
	return float64(b) / (1 << 20)
}
