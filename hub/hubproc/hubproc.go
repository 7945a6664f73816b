// Package hubproc runs a hub in a child process, for whole-system benchmarks that must measure
// the hub's memory and CPU apart from the load generator's. The benchmark binary re-executes
// itself with a flag of its choosing; the child calls Serve, the parent Start.
package hubproc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tributary-iot/tributary/hub"
)

// envDir passes the child its data directory; envShared its Shared settings as JSON.
const (
	envDir    = "TRIBUTARY_HUBPROC_DIR"
	envShared = "TRIBUTARY_HUBPROC_SHARED"
)

// Shared is what makes a child one of several hubs: an external NATS (cluster) and InfluxDB.
// Start passes it to the child, whose Serve applies it over its defaults.
type Shared struct {
	NATSURL      string `json:"nats_url,omitempty"`
	Replicas     int    `json:"replicas,omitempty"`
	InfluxURL    string `json:"influx_url,omitempty"`
	InfluxToken  string `json:"influx_token,omitempty"`
	InfluxOrg    string `json:"influx_org,omitempty"`
	InfluxBucket string `json:"influx_bucket,omitempty"`
	// LeaseTTL is the hubs' --lease-ttl (0: the default).
	LeaseTTL time.Duration `json:"lease_ttl,omitempty"`
}

// IsChild reports whether this process was started by Start (so it should call Serve).
func IsChild() bool { return os.Getenv(envDir) != "" }

// Addrs is what the child reports on its first line of stdout.
type Addrs struct {
	HTTP, MQTT, CoAP, NATS, APIKey string
}

// Options of the child hub.
type Options struct {
	APIKey string
	// CPUProfile, if set, is where the child writes its CPU profile until it stops.
	CPUProfile string
}

// Serve is the child's side: a hub on free loopback ports (no WebSocket or DTLS listeners)
// whose addresses go to stdout as one JSON line; it runs until SIGINT or SIGTERM.
func Serve(opts Options) error {
	RaiseFileLimit()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir := os.Getenv(envDir)
	if dir == "" {
		return errors.New(envDir + " not set: Serve runs in a child started by Start")
	}
	if opts.CPUProfile != "" {
		f, err := os.Create(opts.CPUProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	cfg := hub.Defaults()
	cfg.DataDir = dir
	cfg.HTTPAddr, cfg.MQTTAddr, cfg.CoAPAddr, cfg.NATSAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.MQTTWSAddr, cfg.CoAPSAddr = "", ""
	cfg.APIKey = opts.APIKey
	cfg.LogLevel = "error"
	if js := os.Getenv(envShared); js != "" {
		var sh Shared
		if err := json.Unmarshal([]byte(js), &sh); err != nil {
			return fmt.Errorf("%s: %w", envShared, err)
		}
		cfg.NATSURL, cfg.Replicas = sh.NATSURL, sh.Replicas
		if sh.NATSURL != "" {
			cfg.NATSAddr = ""
		}
		cfg.InfluxURL, cfg.InfluxToken, cfg.InfluxOrg = sh.InfluxURL, sh.InfluxToken, sh.InfluxOrg
		cfg.LeaseTTL = sh.LeaseTTL
		if sh.InfluxBucket != "" {
			cfg.InfluxBucket = sh.InfluxBucket
		}
	}
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
	json.NewEncoder(os.Stdout).Encode(Addrs{HTTP: h.HTTPAddr(), MQTT: h.MQTTAddr(), CoAP: h.CoAPAddr(), NATS: h.NATSURL(), APIKey: h.APIKey()})
	return <-errc
}

// Child is a hub running in a child process.
type Child struct {
	Addrs
	PID int
	cmd *exec.Cmd
	dir string
}

// Start re-executes this binary with args (which must make it call Serve), in a fresh data
// directory, and returns once the child reports its addresses.
func Start(ctx context.Context, args ...string) (*Child, error) {
	return StartShared(ctx, Shared{}, args...)
}

// StartShared is Start for a child that shares NATS and InfluxDB with other hubs.
func StartShared(ctx context.Context, sh Shared, args ...string) (*Child, error) {
	js, err := json.Marshal(sh)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "hubproc-*")
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self, args...)
	cmd.Env = append(os.Environ(), envDir+"="+dir, envShared+"="+string(js))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &Child{PID: cmd.Process.Pid, cmd: cmd, dir: dir}
	if err := json.NewDecoder(out).Decode(&c.Addrs); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("child hub did not report its addresses: %w", err)
	}
	go io.Copy(io.Discard, out)
	return c, nil
}

// Stop sends SIGTERM, waits up to 20 s (then kills), and removes the data directory.
func (c *Child) Stop() {
	c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
	os.RemoveAll(c.dir)
}

// Kill ends the child with SIGKILL, as a crash would, waits for it and removes its data
// directory.
func (c *Child) Kill() {
	c.cmd.Process.Kill()
	c.cmd.Wait()
	os.RemoveAll(c.dir)
}

// RSS is the child's resident set size in bytes.
func (c *Child) RSS() (int64, error) { return RSS(c.PID) }

// RSS reads a process's resident set size from /proc.
func RSS(pid int) (int64, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// RaiseFileLimit lifts the open-file limit to its hard maximum (thousands of connections).
func RaiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}
