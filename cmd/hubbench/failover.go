package main

// hubbench failover: how long a rule stops when the hub instance running it dies.
//
//	go run ./cmd/hubbench failover                      # 10 kills, lease TTL 5s (the default)
//	go run ./cmd/hubbench failover -kills 20 -ttl 2s
//
// A nats-server with JetStream runs in this process; -hubs hubd instances (child processes of
// this binary) share it. One rule counts telemetry in 1 s windows while this process stores a
// message every 20 ms. Each round kills the rule's owner with SIGKILL and measures, from the
// kill, when another instance holds the rule's lease ("taken over") and when it has processed a
// message stored after the kill ("resumed": checkpoint restored and backlog read); then it
// starts a fresh instance in place of the dead one.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/hub"
	"github.com/tributary-iot/tributary/rules"
	"github.com/tributary-iot/tributary/streams"
)

const failoverKey = "hubbench-failover-key"

// failoverMain is the "failover" subcommand.
func failoverMain(args []string) {
	fs := flag.NewFlagSet("hubbench failover", flag.ExitOnError)
	kills := fs.Int("kills", 10, "owners to kill")
	ttl := fs.Duration("ttl", 5*time.Second, "lease TTL of the hubs (--lease-ttl)")
	hubs := fs.Int("hubs", 2, "hub instances")
	child := fs.String("child", "", "internal: run one hub on this NATS URL")
	dir := fs.String("dir", "", "internal: the child hub's data directory")
	jsonOut := fs.Bool("json", false, "print the report as JSON")
	fs.Parse(args)
	if *child != "" {
		if err := failoverChild(*child, *dir, *ttl); err != nil {
			fmt.Fprintln(os.Stderr, "hubbench failover child:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := runFailover(ctx, *kills, *hubs, *ttl)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hubbench failover:", err)
		os.Exit(1)
	}
	if *jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
		return
	}
	fmt.Printf("failover of a rule's owner (kill -9), %d hubs on one NATS server, lease TTL %v, %d kills\n", *hubs, *ttl, rep.Kills)
	fmt.Printf("  taken over: p50 %.0f ms  p99 %.0f ms  max %.0f ms\n", rep.TakenP50ms, rep.TakenP99ms, rep.TakenMaxms)
	fmt.Printf("  resumed:    p50 %.0f ms  p99 %.0f ms  max %.0f ms\n", rep.ResumedP50ms, rep.ResumedP99ms, rep.ResumedMaxms)
}

// FailoverReport is what the failover subcommand prints.
type FailoverReport struct {
	Kills        int     `json:"kills"`
	Hubs         int     `json:"hubs"`
	TTLms        int64   `json:"lease_ttl_ms"`
	TakenP50ms   float64 `json:"taken_over_p50_ms"`
	TakenP99ms   float64 `json:"taken_over_p99_ms"`
	TakenMaxms   float64 `json:"taken_over_max_ms"`
	ResumedP50ms float64 `json:"resumed_p50_ms"`
	ResumedP99ms float64 `json:"resumed_p99_ms"`
	ResumedMaxms float64 `json:"resumed_max_ms"`
}

// failoverChild runs one hub on natsURL until SIGTERM, reporting its addresses on stdout.
func failoverChild(natsURL, dir string, ttl time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := hub.Defaults()
	cfg.DataDir, cfg.NATSURL, cfg.NATSAddr, cfg.LeaseTTL, cfg.APIKey = dir, natsURL, "", ttl, failoverKey
	cfg.HTTPAddr, cfg.MQTTAddr, cfg.CoAPAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.MQTTWSAddr, cfg.CoAPSAddr = "", ""
	cfg.HTTPSAddr, cfg.MQTTSAddr, cfg.MQTTWSSAddr = "", "", ""
	h, err := hub.New(ctx, cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- h.Run(ctx) }()
	select {
	case <-h.Ready():
	case err := <-errc:
		return err
	}
	json.NewEncoder(os.Stdout).Encode(failoverHub{HTTP: h.HTTPAddr(), Instance: h.Instance()})
	return <-errc
}

type failoverHub struct {
	HTTP, Instance string
	cmd            *exec.Cmd
	dir            string
}

func startFailoverHub(ctx context.Context, natsURL string, ttl time.Duration) (*failoverHub, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "hubbench-failover-*")
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self, "failover", "-child", natsURL, "-dir", dir, "-ttl", ttl.String())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	h := &failoverHub{cmd: cmd, dir: dir}
	if err := json.NewDecoder(out).Decode(h); err != nil {
		h.kill9()
		return nil, fmt.Errorf("child hub did not report its address: %w", err)
	}
	go io.Copy(io.Discard, out)
	return h, nil
}

// kill9 sends SIGKILL, reaps the child and removes its data directory.
func (h *failoverHub) kill9() {
	h.cmd.Process.Signal(syscall.SIGKILL)
	h.cmd.Wait()
	os.RemoveAll(h.dir)
}

func (h *failoverHub) stop() {
	h.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { h.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		h.cmd.Process.Kill()
		<-done
	}
	os.RemoveAll(h.dir)
}

func (h *failoverHub) api(method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		r = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(method, "http://"+h.HTTP+path, r)
	req.Header.Set("Authorization", "Bearer "+failoverKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

func (h *failoverHub) stats() (rules.Stats, error) {
	var s rules.Stats
	err := h.api("GET", "/api/v1/rules/failover/stats", nil, &s)
	return s, err
}

func runFailover(ctx context.Context, kills, nhubs int, ttl time.Duration) (*FailoverReport, error) {
	if nhubs < 2 || kills < 1 {
		return nil, errors.New("-hubs must be at least 2 and -kills at least 1")
	}
	dir, err := os.MkdirTemp("", "hubbench-nats-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoSigs: true})
	if err != nil {
		return nil, err
	}
	ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		return nil, errors.New("nats-server not ready")
	}
	var hubs []*failoverHub
	defer func() {
		for _, h := range hubs {
			h.stop()
		}
	}()
	for range nhubs {
		h, err := startFailoverHub(ctx, ns.ClientURL(), ttl)
		if err != nil {
			return nil, err
		}
		hubs = append(hubs, h)
	}
	if err := hubs[0].api("POST", "/api/v1/rules", map[string]any{"name": "failover", "lateness": "0s", "idle_timeout": "2s",
		"sql": `SELECT count(*) AS n FROM 'devices/+/telemetry' GROUP BY TUMBLING(1s)`}, nil); err != nil {
		return nil, err
	}

	// Steady input: one message every 20 ms, stored straight into the stream.
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	pctx, stopPub := context.WithCancel(ctx)
	defer stopPub()
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-pctx.Done():
				return
			case now := <-t.C:
				env := &streams.Envelope{ID: fmt.Sprintf("fo-%d", i), DeviceID: "fo", Topic: "devices/fo/telemetry",
					ContentType: "application/json", Protocol: "bench", Payload: []byte(`{"v":1}`)}
				env.Stamp(now)
				if msg, err := env.ToMsg(); err == nil {
					js.PublishMsg(pctx, msg)
				}
			}
		}
	}()
	defer func() { stopPub(); <-pubDone }()

	ownerOf := func() (*failoverHub, error) {
		deadline := time.Now().Add(ttl + 30*time.Second)
		for time.Now().Before(deadline) {
			for _, h := range hubs {
				if s, err := h.stats(); err == nil && s.Owner == h.Instance && s.Running && !s.CatchingUp {
					return h, nil
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		return nil, errors.New("no instance runs the rule")
	}
	var taken, resumed []time.Duration
	for k := range kills {
		owner, err := ownerOf()
		if err != nil {
			return nil, err
		}
		// Kill at a random point of the owner's renewal period (TTL/3), as a crash would.
		time.Sleep(rand.N(ttl / 3))
		info, err := js.Stream(ctx, streams.StreamMessages)
		if err != nil {
			return nil, err
		}
		si, err := info.Info(ctx)
		if err != nil {
			return nil, err
		}
		after := si.State.LastSeq
		owner.kill9()
		killed := time.Now()
		hubs = slices.DeleteFunc(hubs, func(h *failoverHub) bool { return h == owner })
		var tk, rs time.Duration
		for rs == 0 {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if time.Since(killed) > ttl+60*time.Second {
				return nil, fmt.Errorf("kill %d: the rule did not resume within %v", k+1, ttl+60*time.Second)
			}
			for _, h := range hubs {
				s, err := h.stats()
				if err != nil || s.Owner != h.Instance {
					continue
				}
				if tk == 0 {
					tk = time.Since(killed)
				}
				if s.Running && s.LastSeq > after {
					rs = time.Since(killed)
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		taken, resumed = append(taken, tk), append(resumed, rs)
		fmt.Fprintf(os.Stderr, "kill %d/%d: taken over after %v, resumed after %v\n", k+1, kills, tk.Round(time.Millisecond), rs.Round(time.Millisecond))
		h, err := startFailoverHub(ctx, ns.ClientURL(), ttl)
		if err != nil {
			return nil, err
		}
		hubs = append(hubs, h)
	}
	slices.Sort(taken)
	slices.Sort(resumed)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return &FailoverReport{
		Kills: kills, Hubs: nhubs, TTLms: ttl.Milliseconds(),
		TakenP50ms: percentile(taken, 0.50), TakenP99ms: percentile(taken, 0.99), TakenMaxms: ms(taken[len(taken)-1]),
		ResumedP50ms: percentile(resumed, 0.50), ResumedP99ms: percentile(resumed, 0.99), ResumedMaxms: ms(resumed[len(resumed)-1]),
	}, nil
}
