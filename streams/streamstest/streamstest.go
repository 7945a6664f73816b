// Package streamstest starts a real embedded NATS server with JetStream for tests.
package streamstest

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/tributary-iot/tributary/streams"
)

// New returns a Bus on an embedded JetStream server storing under t.TempDir(), listening on a
// free loopback port (so nats.go clients can connect to b.ClientURL()), closed at cleanup.
func New(t testing.TB) *streams.Bus {
	t.Helper()
	return NewWithConfig(t, streams.Config{})
}

// NewWithConfig is New with cfg; StoreDir and ListenAddr are filled in when empty.
func NewWithConfig(t testing.TB, cfg streams.Config) *streams.Bus {
	t.Helper()
	if cfg.URL == "" && cfg.StoreDir == "" {
		cfg.StoreDir = t.TempDir()
	}
	if cfg.URL == "" && cfg.ListenAddr == "" {
		cfg.ListenAddr = "127.0.0.1:0"
	}
	b, err := streams.New(context.Background(), cfg, Logger(t))
	if err != nil {
		t.Fatalf("start streams: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}

// Server starts a standalone nats-server with JetStream storing under t.TempDir(), on a free
// loopback port, shut down at cleanup: for tests where several hubs share one NATS
// (hub.Config.NATSURL = s.ClientURL()). Register it before the hubs, so that they stop first.
func Server(t testing.TB) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return ns
}

// Logger writes to the test log at warning level and above, so failures show what went wrong
// without drowning passing runs.
// Lines logged after the test ended (by goroutines still stopping) are dropped instead of
// panicking.
func Logger(t testing.TB) *slog.Logger {
	if _, ok := t.(*testing.F); ok {
		// Servers started once for a fuzz target log from their goroutines while it runs,
		// and f.Log panics then.
		return slog.New(slog.DiscardHandler)
	}
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}
