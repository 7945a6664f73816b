// Package influxtest runs a real InfluxDB 1.8 server (influxd) for tests: on free loopback ports,
// with its data under t.TempDir(), Flux enabled, usage reporting off and logging quiet.
//
// InfluxDB 1.8 speaks the 2.x API through its compatibility layer, so influxdb-client-go works
// against it with org "", token "" and bucket "<database>/autogen".
//
// The influxd binary is looked up as $INFLUXD, then influxd on PATH, then $(go env GOPATH)/bin.
// `make test` installs it with
//
//	go install github.com/influxdata/influxdb/cmd/influxd@v1.8.10
//
// When it is missing, tests are skipped, except with CI=true where they fail: CI never skips.
package influxtest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Database is the database every Server creates at start.
const Database = "tributary"

// Server is one running influxd.
type Server struct {
	// URL is the HTTP API, e.g. "http://127.0.0.1:38123".
	URL string
	// Database is the database created at start; Bucket is its 2.x-API name "<db>/autogen".
	Database, Bucket string
	// Org and Token are what the 2.x client needs for InfluxDB 1.8 without auth: both empty.
	Org, Token string

	fatalf  func(format string, args ...any)
	bin     string
	dir     string
	cfgPath string
	logPath string
	shared  bool

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	dbs    int
}

// DB is one database on a Server, as the 2.x client addresses it.
type DB struct {
	URL, Org, Token string
	Database        string
	// Bucket is "<database>/autogen".
	Bucket string
}

// Start runs an influxd of the test's own, stopped at cleanup. It returns once the server
// answers /ping and the database exists. Starting influxd costs seconds of CPU (Flux compiles
// its standard library), so tests that need no outage should share one with Shared.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := binary(t)
	s, err := start(bin, t.TempDir(), t.Fatalf)
	if err != nil {
		t.Fatalf("influxtest: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

var shared struct {
	once sync.Once
	s    *Server
	err  error
	dir  string
}

// Shared returns the test binary's shared influxd, started on first use and stopped by Main.
// Tests on it must not Stop or Restart it; each uses its own database (NewDB).
func Shared(t testing.TB) *Server {
	t.Helper()
	bin := binary(t)
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "influxtest-")
		if shared.err != nil {
			return
		}
		shared.s, shared.err = start(bin, shared.dir, func(f string, a ...any) { panic(fmt.Sprintf(f, a...)) })
		if shared.s != nil {
			shared.s.shared = true
		}
	})
	if shared.err != nil {
		t.Fatalf("influxtest: %v", shared.err)
	}
	return shared.s
}

// Main runs the tests and then stops the shared server: call it from TestMain,
//
//	func TestMain(m *testing.M) { os.Exit(influxtest.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	if shared.s != nil {
		shared.s.stop(syscall.SIGTERM)
		os.RemoveAll(shared.dir)
	}
	return code
}

// NewDB creates a database of the test's own on s.
func (s *Server) NewDB(t testing.TB) DB {
	t.Helper()
	s.mu.Lock()
	s.dbs++
	name := fmt.Sprintf("db%d", s.dbs)
	s.mu.Unlock()
	if err := s.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("influxtest: %v", err)
	}
	return DB{URL: s.URL, Org: s.Org, Token: s.Token, Database: name, Bucket: name + "/autogen"}
}

func binary(t testing.TB) string {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("influxtest: %v (CI=true: tests that need InfluxDB never skip in CI)", err)
		}
		t.Skipf("influxtest: %v; `make test` installs it (go install github.com/influxdata/influxdb/cmd/influxd@v1.8.10)", err)
	}
	return bin
}

func start(bin, dir string, fatalf func(string, ...any)) (*Server, error) {
	s := &Server{fatalf: fatalf, bin: bin, dir: dir, Database: Database, Bucket: Database + "/autogen"}
	s.logPath = filepath.Join(s.dir, "influxd.log")
	s.cfgPath = filepath.Join(s.dir, "influxd.conf")
	// Free ports are found by binding and releasing them; another process can take one in
	// between, so a start that fails is retried on fresh ports.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		httpPort, rpcPort, err := freePorts()
		if err != nil {
			return nil, err
		}
		s.URL = fmt.Sprintf("http://127.0.0.1:%d", httpPort)
		if err := os.WriteFile(s.cfgPath, []byte(config(s.dir, httpPort, rpcPort)), 0o600); err != nil {
			return nil, err
		}
		if lastErr = s.start(); lastErr == nil {
			break
		}
		s.Stop()
	}
	if lastErr != nil {
		return nil, lastErr
	}
	if err := s.Exec("CREATE DATABASE " + Database); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// Binary finds the influxd executable: $INFLUXD, then PATH, then $(go env GOPATH)/bin/influxd.
func Binary() (string, error) {
	if p := os.Getenv("INFLUXD"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("INFLUXD=%s: %w", p, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("influxd"); err == nil {
		return p, nil
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			gopath = strings.TrimSpace(string(out))
		}
	}
	for _, dir := range filepath.SplitList(gopath) {
		p := filepath.Join(dir, "bin", "influxd")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("influxd not found ($INFLUXD, PATH, $(go env GOPATH)/bin)")
}

func freePorts() (int, int, error) {
	var ports [2]int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, 0, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports[0], ports[1], nil
}

// config is the influxd configuration: only what differs from the defaults that matter.
func config(dir string, httpPort, rpcPort int) string {
	return fmt.Sprintf(`reporting-disabled = true
bind-address = "127.0.0.1:%[3]d"

[meta]
  dir = %[1]q
  logging-enabled = false

[data]
  dir = %[2]q
  wal-dir = %[4]q
  query-log-enabled = false
  trace-logging-enabled = false

[retention]
  enabled = false

[shard-precreation]
  enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:%[5]d"
  auth-enabled = false
  log-enabled = false
  suppress-write-log = true
  flux-enabled = true
  flux-log-enabled = false
  pprof-enabled = false

[continuous_queries]
  enabled = false
  log-enabled = false

[logging]
  level = "error"
  suppress-logo = true
`, filepath.Join(dir, "meta"), filepath.Join(dir, "data"), rpcPort, filepath.Join(dir, "wal"), httpPort)
}

func (s *Server) start() error {
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(s.bin, "run", "-config", s.cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "INFLUXDB_REPORTING_DISABLED=true")
	cmd.SysProcAttr = procAttr() // dies with the test binary
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()

	deadline := time.Now().Add(30 * time.Second)
	for {
		if ping(s.URL) {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("influxd exited at start: %s", s.logTail())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("influxd did not answer /ping within 30s: %s", s.logTail())
		}
	}
}

func ping(base string) bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(base + "/ping")
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusNoContent
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(s.logPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// Exec runs an InfluxQL statement (CREATE DATABASE, DROP MEASUREMENT, ...) through /query.
func (s *Server) Exec(q string) error {
	resp, err := http.PostForm(s.URL+"/query", url.Values{"q": {q}})
	if err != nil {
		return fmt.Errorf("%s: %w", q, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || bytes.Contains(body, []byte(`"error"`)) {
		return fmt.Errorf("%s: %s: %s", q, resp.Status, bytes.TrimSpace(body))
	}
	return nil
}

// Stop shuts influxd down (SIGTERM, then SIGKILL after 10 s) and waits for it. The data stays for
// Restart. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	if s.shared {
		s.fatalf("influxtest: Stop of the shared server; use Start for outage tests")
		return
	}
	s.stop(syscall.SIGTERM)
}

// Kill ends influxd with SIGKILL, like a crash, and waits for it.
func (s *Server) Kill() {
	if s.shared {
		s.fatalf("influxtest: Kill of the shared server; use Start for outage tests")
		return
	}
	s.stop(syscall.SIGKILL)
}

func (s *Server) stop(sig os.Signal) {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// Restart starts influxd again after Stop or Kill, on the same ports with the same data, and
// waits until it answers /ping. It stops a running server first.
func (s *Server) Restart() {
	if s.shared {
		s.fatalf("influxtest: Restart of the shared server; use Start for outage tests")
		return
	}
	s.Stop()
	var err error
	// The listening ports were just released; retry briefly if another socket still holds them.
	for attempt := 0; attempt < 5; attempt++ {
		if err = s.start(); err == nil {
			return
		}
		s.Stop()
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
		time.Sleep(200 * time.Millisecond) // back off before binding again
	}
	s.fatalf("influxtest: restart: %v", err)
}

// Running reports whether influxd is up (it answers /ping).
func (s *Server) Running() bool { return ping(s.URL) }
