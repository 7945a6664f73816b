package main

// hubbench failover: how long a rule stops when the hub instance running it dies.
//
//	go run ./cmd/hubbench failover                      # 10 kills, lease TTL 5s (the default)
//	go run ./cmd/hubbench failover -kills 20 -ttl 2s
//	go run ./cmd/hubbench failover -sigterm             # orderly stops (rolling restarts) instead
//
// A nats-server with JetStream runs in this process; -hubs hubs (child processes of this
// binary, hub/hubproc) share it. One rule counts telemetry in 1 s windows while this process stores a
// message every 20 ms. Each round kills the rule's owner with SIGKILL and measures, from the
// kill, when another instance holds the rule's lease ("taken over") and when it has processed a
// message stored after the kill ("resumed": checkpoint restored and backlog read); then it
// starts a fresh instance in place of the dead one. With -sigterm the owner is stopped with
// SIGTERM instead: it writes a final checkpoint and releases the lease.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/hub/hubproc"
	"github.com/tributary-iot/tributary/rules"
	"github.com/tributary-iot/tributary/streams"
)

// failoverMain is the "failover" subcommand.
func failoverMain(args []string) {
	fs := flag.NewFlagSet("hubbench failover", flag.ExitOnError)
	kills := fs.Int("kills", 10, "owners to kill")
	ttl := fs.Duration("ttl", 5*time.Second, "lease TTL of the hubs (--lease-ttl)")
	hubs := fs.Int("hubs", 2, "hub instances")
	sigterm := fs.Bool("sigterm", false, "stop owners with SIGTERM (orderly) instead of SIGKILL")
	jsonOut := fs.Bool("json", false, "print the report as JSON")
	fs.Parse(args)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := runFailover(ctx, *kills, *hubs, *ttl, *sigterm)
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
	how := "kill -9"
	if *sigterm {
		how = "SIGTERM"
	}
	fmt.Printf("failover of a rule's owner (%s), %d hubs on one NATS server, lease TTL %v, %d kills\n", how, *hubs, *ttl, rep.Kills)
	fmt.Printf("  taken over: p50 %.0f ms  p99 %.0f ms  max %.0f ms\n", rep.TakenP50ms, rep.TakenP99ms, rep.TakenMaxms)
	fmt.Printf("  resumed:    p50 %.0f ms  p99 %.0f ms  max %.0f ms\n", rep.ResumedP50ms, rep.ResumedP99ms, rep.ResumedMaxms)
}

// FailoverReport is what the failover subcommand prints.
type FailoverReport struct {
	Kills        int     `json:"kills"`
	SIGTERM      bool    `json:"sigterm"`
	Hubs         int     `json:"hubs"`
	TTLms        int64   `json:"lease_ttl_ms"`
	TakenP50ms   float64 `json:"taken_over_p50_ms"`
	TakenP99ms   float64 `json:"taken_over_p99_ms"`
	TakenMaxms   float64 `json:"taken_over_max_ms"`
	ResumedP50ms float64 `json:"resumed_p50_ms"`
	ResumedP99ms float64 `json:"resumed_p99_ms"`
	ResumedMaxms float64 `json:"resumed_max_ms"`
}

type failoverHub struct {
	*hubproc.Child
	Instance string
}

func startFailoverHub(ctx context.Context, natsURL string, ttl time.Duration) (*failoverHub, error) {
	c, err := hubproc.StartShared(ctx, hubproc.Shared{NATSURL: natsURL, LeaseTTL: ttl}, "-serve")
	if err != nil {
		return nil, err
	}
	h := &failoverHub{Child: c}
	var r struct {
		Components struct {
			Leases struct{ Instance string } `json:"leases"`
		} `json:"components"`
	}
	if err := h.api("GET", "/readyz", nil, &r); err != nil || r.Components.Leases.Instance == "" {
		c.Stop()
		return nil, fmt.Errorf("child hub: no instance name in /readyz (%v)", err)
	}
	h.Instance = r.Components.Leases.Instance
	return h, nil
}

func (h *failoverHub) api(method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		r = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(method, "http://"+h.HTTP+path, r)
	req.Header.Set("Authorization", "Bearer "+h.APIKey)
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

func runFailover(ctx context.Context, kills, nhubs int, ttl time.Duration, sigterm bool) (*FailoverReport, error) {
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
			h.Stop()
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
		killed := time.Now()
		exited := make(chan struct{})
		if sigterm {
			go func() { owner.Stop(); close(exited) }() // the rule moves while the process winds down
		} else {
			owner.Kill()
			close(exited)
		}
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
		<-exited
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
		Kills: kills, SIGTERM: sigterm, Hubs: nhubs, TTLms: ttl.Milliseconds(),
		TakenP50ms: percentile(taken, 0.50), TakenP99ms: percentile(taken, 0.99), TakenMaxms: ms(taken[len(taken)-1]),
		ResumedP50ms: percentile(resumed, 0.50), ResumedP99ms: percentile(resumed, 0.99), ResumedMaxms: ms(resumed[len(resumed)-1]),
	}, nil
}
