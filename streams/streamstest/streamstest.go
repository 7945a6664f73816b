// Package streamstest starts a real embedded NATS server with JetStream for tests.
package streamstest

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

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
