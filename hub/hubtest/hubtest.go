// Package hubtest starts a real hub for end-to-end tests: embedded JetStream in a temp dir, the
// MQTT broker, CoAP server and HTTP API on free loopback ports.
package hubtest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/hub"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

// APIKey is the admin key of hubs started here.
const APIKey = "test-admin-key"

// Hub is a running hub with helpers for talking to it.
type Hub struct {
	*hub.Hub
	Config hub.Config
	URL    string // http://host:port
	t      testing.TB
	stop   func()
}

// Config returns a configuration for a test hub in dataDir on free loopback ports, with the
// embedded NATS listening too so tests can use nats.go.
func Config(dataDir string) hub.Config {
	cfg := hub.Defaults()
	cfg.DataDir = dataDir
	cfg.HTTPAddr, cfg.MQTTAddr, cfg.MQTTWSAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.CoAPAddr, cfg.CoAPSAddr, cfg.NATSAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.APIKey = APIKey
	// Every test connects from 127.0.0.1, and many refuse credentials on purpose: throttling
	// failed authentication would make them depend on each other's counts. Tests of the
	// throttle turn it on.
	cfg.AuthMaxFailures = -1
	return cfg
}

// Start runs a hub with Config(t.TempDir()) changed by opts, and stops it at cleanup.
func Start(t testing.TB, opts ...func(*hub.Config)) *Hub {
	t.Helper()
	cfg := Config(t.TempDir())
	for _, o := range opts {
		o(&cfg)
	}
	return StartConfig(t, cfg)
}

// StartConfig runs a hub with cfg until Stop or cleanup.
func StartConfig(t testing.TB, cfg hub.Config) *Hub {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h, err := hub.New(ctx, cfg, streamstest.Logger(t))
	if err != nil {
		cancel()
		t.Fatalf("start hub: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	select {
	case <-h.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("hub stopped while starting: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("hub not ready after 30s")
	}
	th := &Hub{Hub: h, Config: cfg, URL: "http://" + h.HTTPAddr(), t: t}
	stopped := false
	th.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("hub stopped with error: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("hub did not stop within 30s")
		}
	}
	t.Cleanup(th.stop)
	return th
}

// Stop stops the hub and waits for it.
func (h *Hub) Stop() { h.stop() }

// Do sends an authenticated API request with body (marshalled as JSON unless it is []byte or
// nil) and decodes a JSON answer into out (if not nil). It returns the status code.
func (h *Hub) Do(method, path string, body, out any) int {
	h.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, h.URL+path, r)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+APIKey)
	if r != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			h.t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, data, err)
		}
	}
	return resp.StatusCode
}

// CreateDevice registers a device and returns its token.
func (h *Hub) CreateDevice(id string, fields map[string]any) string {
	h.t.Helper()
	body := map[string]any{"id": id}
	for k, v := range fields {
		body[k] = v
	}
	var out struct{ Token, Error string }
	if code := h.Do("POST", "/api/v1/devices", body, &out); code != http.StatusCreated {
		h.t.Fatalf("create device %s: %d %s", id, code, out.Error)
	}
	return out.Token
}

// Eventually polls cond every 10 ms until it is true or d passes, then fails with msg.
func Eventually(t testing.TB, d time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf(msg, args...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
