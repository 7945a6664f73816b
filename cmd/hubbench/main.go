// Command hubbench is the whole-system benchmark: it starts a real hubd in a child process (so
// its memory is measured alone), drives it with real MQTT and CoAP clients, and prints ingest
// rates, latency percentiles, the JetStream storage ceiling and memory per idle connection.
//
//	go run ./cmd/hubbench            # everything, ~2 minutes
//	go run ./cmd/hubbench -quick     # smaller counts, for a smoke test
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	serve := flag.Bool("serve", false, "internal: run the hub and print its addresses (used by the child process)")
	quick := flag.Bool("quick", false, "smaller message and connection counts")
	only := flag.String("only", "", "comma-separated subset: ceiling,qos0,qos1,coap,latency,idle")
	jsonOut := flag.Bool("json", false, "print the report as JSON")
	flag.Parse()
	if *serve {
		if err := serveHub(); err != nil {
			fmt.Fprintln(os.Stderr, "hubbench serve:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	p := fullParams()
	if *quick {
		p = quickParams()
	}
	rep, err := run(ctx, p, *only)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hubbench:", err)
		os.Exit(1)
	}
	if *jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
		return
	}
	rep.print(os.Stdout)
}

// child is the hubd under test, in its own process.
type child struct {
	cmd   *exec.Cmd
	addrs addrs
	dir   string
}

// addrs is what the child prints on its first stdout line.
type addrs struct {
	HTTP, MQTT, CoAP, NATS, APIKey string
	PID                            int
}

func startChild(ctx context.Context) (*child, error) {
	dir, err := os.MkdirTemp("", "hubbench-*")
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self, "-serve")
	cmd.Env = append(os.Environ(), "HUBBENCH_DIR="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	var a addrs
	if err := json.NewDecoder(out).Decode(&a); err != nil {
		cmd.Process.Kill()
		return nil, fmt.Errorf("child hub did not report its addresses: %w", err)
	}
	go io.Copy(io.Discard, out)
	a.PID = cmd.Process.Pid
	return &child{cmd: cmd, addrs: a, dir: dir}, nil
}

func (c *child) stop() {
	c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
	os.RemoveAll(c.dir)
}

// rssBytes reads the child's resident set size from /proc.
func (c *child) rssBytes() (int64, error) {
	data, err := os.ReadFile(filepath.Join("/proc", fmt.Sprint(c.addrs.PID), "status"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", c.addrs.PID)
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}
