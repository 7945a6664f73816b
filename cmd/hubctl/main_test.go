package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tributary-iot/tributary/hub"
	"github.com/tributary-iot/tributary/hub/hubtest"
	"github.com/tributary-iot/tributary/tlsconf/tlstest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// masks replace what changes from run to run: times, tokens and message IDs, sequences.
var masks = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`), "<TIME>"},
	{regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}`), "<TIME>"},
	{regexp.MustCompile(`"seq": ?\d+`), `"seq":<SEQ>`},
}

// word finds runs of base64url characters: tokens and message IDs are 22 of them.
var word = regexp.MustCompile(`[A-Za-z0-9_-]+`)

func mask(s string) string {
	for _, m := range masks {
		s = m.re.ReplaceAllString(s, m.with)
	}
	return word.ReplaceAllStringFunc(s, func(w string) string {
		if len(w) == 22 {
			return "<RANDOM>"
		}
		return w
	})
}

// hubctl runs the command line and returns what it printed, masked, in the golden format.
func hubctl(t *testing.T, args ...string) (out string, code int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code = run(args, &stdout, &stderr)
	var b strings.Builder
	shown := make([]string, len(args))
	for i, a := range args {
		if filepath.IsAbs(a) {
			a = filepath.Base(a) // temp dirs differ from run to run
		}
		shown[i] = a
	}
	fmt.Fprintf(&b, "$ hubctl %s\n%s", strings.Join(shown, " "), stdout.String())
	if stderr.Len() > 0 {
		fmt.Fprintf(&b, "--- stderr\n%s", stderr.String())
	}
	fmt.Fprintf(&b, "--- exit %d\n", code)
	return mask(b.String()), code
}

// golden compares got with testdata/name.golden (rewritten with -update).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/hubctl -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s: got\n%s\nwant\n%s", path, got, want)
	}
}

// script runs commands in order and compares their transcript with one golden file.
func script(t *testing.T, name string, cmds ...[]string) {
	t.Helper()
	var all strings.Builder
	for _, args := range cmds {
		out, _ := hubctl(t, args...)
		all.WriteString(out)
		all.WriteString("\n")
	}
	golden(t, name, all.String())
}

// isolate keeps the developer's own config file and environment out of the test.
func isolate(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("HOME", t.TempDir())
	t.Setenv("HUBCTL_CONFIG", "")
	t.Setenv("HUB_URL", "")
	t.Setenv("HUB_API_KEY", "")
}

func TestDevicesAgainstHub(t *testing.T) {
	isolate(t)
	h := hubtest.Start(t)
	t.Setenv("HUB_URL", h.URL)
	t.Setenv("HUB_API_KEY", hubtest.APIKey)

	dir := t.TempDir()
	csvFile := filepath.Join(dir, "devices.csv")
	os.WriteFile(csvFile, []byte("id,name,type,lat,lon,tags\nvalve-1,Valve 1,valve,59.1,10.1,site=north;floor=2\nvalve-2,,valve,,,\npump-1,dup,pump,,,\n"), 0o600)
	jsonFile := filepath.Join(dir, "device.json")
	os.WriteFile(jsonFile, []byte(`{"id":"meter-9","type":"meter","metadata":{"fw":"1.2"}}`), 0o600)

	script(t, "devices",
		[]string{"devices", "create", "pump-1", "--name", "Pump 1", "--type", "pump", "--tag", "site=north", "--tag", "zone=a", "--lat", "59.91", "--lon", "10.75"},
		[]string{"devices", "create", "-f", csvFile},
		[]string{"devices", "create", "-f", jsonFile, "-o", "json"},
		[]string{"devices", "list"},
		[]string{"devices", "list", "--type", "valve", "-o", "csv"},
		[]string{"devices", "list", "-q", "pump", "-o", "json"},
		[]string{"devices", "list", "--tag", "site:north", "-o", "yaml"},
		[]string{"devices", "get", "pump-1"},
		[]string{"devices", "get", "meter-9", "-o", "yaml"},
		[]string{"devices", "rotate-token", "pump-1"},
		[]string{"devices", "delete", "valve-2"},
		[]string{"devices", "get", "valve-2"},
		[]string{"devices", "create", "bad id"},
	)

	// Exit codes a script relies on.
	for _, tt := range []struct {
		args []string
		code int
	}{
		{[]string{"devices", "get", "pump-1"}, exitOK},
		{[]string{"devices", "get", "nope"}, exitNotFound},
		{[]string{"devices", "delete", "nope"}, exitNotFound},
		{[]string{"devices", "create", "pump-1"}, exitAPI}, // exists: 409
		{[]string{"devices", "get"}, exitUsage},
		{[]string{"devices", "list", "-o", "xml"}, exitUsage},
		{[]string{"devices", "frobnicate"}, exitUsage},
		{[]string{"devices", "list", "--api-key", "wrong"}, exitAPI},
		{[]string{"devices", "list", "--server", "http://127.0.0.1:1"}, exitAPI},
		{[]string{}, exitUsage},
	} {
		if _, code := hubctl(t, tt.args...); code != tt.code {
			t.Errorf("hubctl %s: exit %d, want %d", strings.Join(tt.args, " "), code, tt.code)
		}
	}
}

func TestTailAgainstHub(t *testing.T) {
	isolate(t)
	h := hubtest.Start(t)
	t.Setenv("HUB_URL", h.URL)
	t.Setenv("HUB_API_KEY", hubtest.APIKey)
	token := h.CreateDevice("th-1", nil)
	client := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + h.MQTTAddr()).
		SetClientID("th-1").SetUsername("th-1").SetPassword(token))
	if tok := client.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("MQTT connect: %v", tok.Error())
	}
	defer client.Disconnect(100)
	for i, topic := range []string{"telemetry", "events/door", "telemetry", "telemetry"} {
		payload := fmt.Sprintf(`{"temperature":%d.5,"env":{"humidity":%d},"ts":"2026-01-02T03:04:0%dZ"}`, 20+i, 40+i, i)
		if tok := client.Publish("devices/th-1/"+topic, 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	script(t, "tail",
		[]string{"tail", "devices/+/telemetry", "--since", "0", "--count", "3"},
		// Several filters; devices/th-1/# would also catch the hub's status events
		// (devices/th-1/status), whose order against the telemetry is not fixed.
		[]string{"tail", "devices/th-1/telemetry", "devices/th-1/events/#", "--since", "0", "--count", "2", "-o", "json"},
		[]string{"tail", "devices/+/telemetry", "--since", "0", "--count", "2", "--fields", "env.humidity"},
		[]string{"tail"},
		[]string{"tail", "devices/#/x", "--since", "0"},
	)
}

// fakeHub serves the endpoints that other components own (telemetry queries, rules, replays,
// simulations) with fixed answers, so hubctl's rendering of them is pinned by golden files.
func fakeHub(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	reply := func(pattern string, status int, body string) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer fake-key" {
				w.WriteHeader(401)
				io.WriteString(w, `{"error":"invalid API key"}`)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			io.WriteString(w, body)
		})
	}
	var points []string
	for i := range 12 {
		points = append(points, fmt.Sprintf(`{"time":"2026-01-02T03:%02d:00Z","value":%g}`, i, 20+5*float64(i%6)/5))
	}
	reply("GET /api/v1/devices/d1/telemetry", 200, `{"device":"d1","field":"temperature","points":[`+strings.Join(points, ",")+`]}`)
	reply("GET /api/v1/devices/d2/telemetry", 400, `{"error":"agg \"median\" is not one of mean, min, max, sum, count, first, last"}`)
	reply("GET /api/v1/rules", 200, `{"rules":[{"name":"hot-rooms","sql":"SELECT ...","enabled":true},{"name":"door-count","sql":"SELECT ...","enabled":false}]}`)
	reply("GET /api/v1/rules/hot-rooms/stats", 200, `{"events_in":1200,"open_windows":3,"late_events":0}`)
	reply("GET /api/v1/rules/nope", 404, `{"error":"rule \"nope\" not found"}`)
	reply("POST /api/v1/rules", 201, `{"name":"hot-rooms","sql":"SELECT ...","enabled":true}`)
	reply("DELETE /api/v1/rules/door-count", 204, ``)
	// Replays as the simulator's API shows them (status, progress.fraction).
	reply("GET /api/v1/replays", 200, `{"replays":[{"id":"r1","status":"running","progress":{"sent":50,"fraction":0.25},"created_at":"2026-01-02T03:04:05Z"}]}`)
	reply("POST /api/v1/replays", 201, `{"id":"r2","status":"running","progress":{"sent":0,"fraction":0}}`)
	reply("GET /api/v1/replays/r2", 200, `{"id":"r2","status":"done","progress":{"sent":200,"fraction":1}}`)
	reply("POST /api/v1/replays/r1/cancel", 200, `{"id":"r1","status":"cancelled"}`)
	reply("POST /api/v1/replays/r1/pause", 200, `{"id":"r1","status":"paused"}`)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(404)
		fmt.Fprintf(w, `{"error":"no such endpoint: %s %s"}`, r.Method, r.URL.Path)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestPassthroughCommands(t *testing.T) {
	isolate(t)
	srv := fakeHub(t)
	dir := t.TempDir()
	// The server and key from the config file.
	cfg := filepath.Join(dir, "hubctl.yaml")
	os.WriteFile(cfg, []byte("server: "+srv.URL+"\napi_key: fake-key\n"), 0o600)
	t.Setenv("HUBCTL_CONFIG", cfg)
	rule := filepath.Join(dir, "rule.yaml")
	os.WriteFile(rule, []byte("name: hot-rooms\nsql: SELECT ...\n"), 0o600)
	replay := filepath.Join(dir, "replay.json")
	os.WriteFile(replay, []byte(`{"from":"-1h","speed":10}`), 0o600)

	script(t, "passthrough",
		[]string{"query", "d1", "temperature", "--from", "-12m", "--every", "1m"},
		[]string{"query", "d1", "temperature", "-o", "csv"},
		[]string{"query", "d1", "temperature", "-o", "json"},
		[]string{"query", "d2", "temperature", "--every", "1m", "--agg", "median"},
		[]string{"query", "d1"},
		[]string{"rules", "list"},
		[]string{"rules", "stats", "hot-rooms"},
		[]string{"rules", "get", "nope"},
		[]string{"rules", "create", "-f", rule, "-o", "json"},
		[]string{"rules", "delete", "door-count"},
		[]string{"replay", "list"},
		[]string{"replay", "create", "-f", replay, "--wait"},
		[]string{"replay", "pause", "r1"},
		[]string{"replay", "stop", "r1"},
		[]string{"replay", "rewind", "r1"},
		[]string{"sim", "list"},
		[]string{"sim", "run"},
	)
}

func TestConfigPrecedence(t *testing.T) {
	isolate(t)
	srv := fakeHub(t)
	cfg := filepath.Join(t.TempDir(), "hubctl.yaml")
	os.WriteFile(cfg, []byte("server: http://127.0.0.1:1\napi_key: from-file\n"), 0o600)
	t.Setenv("HUBCTL_CONFIG", cfg)
	if _, code := hubctl(t, "rules", "list"); code != exitAPI {
		t.Errorf("with the file's unreachable server: exit %d, want %d", code, exitAPI)
	}
	t.Setenv("HUB_URL", srv.URL)
	if out, code := hubctl(t, "rules", "list"); code != exitAPI || !strings.Contains(out, "invalid API key") {
		t.Errorf("HUB_URL over the file, the file's key: exit %d %s, want 1 and invalid API key", code, out)
	}
	t.Setenv("HUB_API_KEY", "fake-key")
	if _, code := hubctl(t, "rules", "list"); code != exitOK {
		t.Errorf("HUB_API_KEY over the file: exit %d, want 0", code)
	}
	if _, code := hubctl(t, "rules", "list", "--api-key", "wrong"); code != exitAPI {
		t.Errorf("--api-key over HUB_API_KEY: exit %d, want 1", code)
	}
	t.Setenv("HUBCTL_CONFIG", filepath.Join(t.TempDir(), "missing.yaml"))
	if _, code := hubctl(t, "rules", "list"); code != exitUsage {
		t.Errorf("a named config file that is missing: exit %d, want 2", code)
	}
}

func TestProgressOnlyOnTerminal(t *testing.T) {
	isolate(t)
	h := hubtest.Start(t)
	t.Setenv("HUB_URL", h.URL)
	t.Setenv("HUB_API_KEY", hubtest.APIKey)
	file := filepath.Join(t.TempDir(), "bulk.json")
	var list []string
	for i := range 5 {
		list = append(list, fmt.Sprintf(`{"id":"bulk-%d"}`, i))
	}
	os.WriteFile(file, []byte("["+strings.Join(list, ",")+"]"), 0o600)

	var stdout, stderr bytes.Buffer
	if code := run([]string{"devices", "create", "-f", file}, &stdout, &stderr); code != 0 || strings.Contains(stderr.String(), "█") {
		t.Errorf("not a terminal: exit %d, stderr %q; want 0 and no bar", code, stderr.String())
	}
	defer func(f func(io.Writer) bool) { stderrIsTTY = f }(stderrIsTTY)
	stderrIsTTY = func(io.Writer) bool { return true }
	stdout.Reset()
	stderr.Reset()
	os.WriteFile(file, []byte(strings.ReplaceAll("["+strings.Join(list, ",")+"]", "bulk-", "tty-")), 0o600)
	if code := run([]string{"devices", "create", "-f", file}, &stdout, &stderr); code != 0 || !strings.Contains(stderr.String(), "100% 5/5") {
		t.Errorf("terminal: exit %d, stderr %q; want a bar reaching 100%% 5/5", code, stderr.String())
	}
}

func TestSparkline(t *testing.T) {
	for _, tt := range []struct {
		in   []float64
		w    int
		want string
	}{
		{[]float64{1, 2, 3, 4, 5, 6, 7, 8}, 10, "▁▂▃▄▅▆▇█"},
		{[]float64{5, 5, 5}, 10, "▄▄▄"},
		{[]float64{0, 0, 10, 10}, 2, "▁█"},
		{nil, 10, ""},
	} {
		if got := sparkline(tt.in, tt.w); got != tt.want {
			t.Errorf("sparkline(%v, %d) = %q, want %q", tt.in, tt.w, got, tt.want)
		}
	}
}

// TestCACert: against a hub serving HTTPS with a private CA's certificate, hubctl fails with a
// clear certificate error on its own and works with --cacert, HUB_CACERT or cacert in its config
// file; a file without a certificate is a usage error.
func TestCACert(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "private CA")
	certFile, keyFile := ca.Server(t, "hub").WriteFiles(t, dir, "server")
	caFile := filepath.Join(dir, "ca.pem")
	tlstest.WriteFile(t, caFile, ca.PEM)
	h := hubtest.Start(t, func(c *hub.Config) {
		c.HTTPSAddr = "127.0.0.1:0"
		c.TLSCert, c.TLSKey = certFile, keyFile
	})
	h.CreateDevice("tls1", nil)
	t.Setenv("HUB_URL", "https://"+h.HTTPSAddr())
	t.Setenv("HUB_API_KEY", hubtest.APIKey)

	if out, code := hubctl(t, "devices", "list"); code != exitAPI || !strings.Contains(out, "certificate signed by unknown authority") {
		t.Errorf("without --cacert: exit %d\n%s\nwant 1 and the certificate error", code, out)
	}
	if out, code := hubctl(t, "devices", "list", "--cacert", caFile); code != exitOK || !strings.Contains(out, "tls1") {
		t.Errorf("with --cacert: exit %d\n%s", code, out)
	}
	t.Setenv("HUB_CACERT", caFile)
	if out, code := hubctl(t, "devices", "get", "tls1"); code != exitOK || !strings.Contains(out, "tls1") {
		t.Errorf("with HUB_CACERT: exit %d\n%s", code, out)
	}
	t.Setenv("HUB_CACERT", "")
	cfg := filepath.Join(dir, "hubctl.yaml")
	tlstest.WriteFile(t, cfg, []byte("cacert: "+caFile+"\n"))
	if out, code := hubctl(t, "devices", "list", "--config", cfg); code != exitOK || !strings.Contains(out, "tls1") {
		t.Errorf("with cacert in the config file: exit %d\n%s", code, out)
	}
	if out, code := hubctl(t, "devices", "list", "--cacert", cfg); code != exitUsage || !strings.Contains(out, "no PEM certificate") {
		t.Errorf("--cacert naming a file without a certificate: exit %d\n%s\nwant 2 and what is wrong", code, out)
	}
}
