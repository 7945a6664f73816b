package rules_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/rules"
	"github.com/tributary-iot/tributary/streams"
)

// hubProc is a hubd child process.
type hubProc struct {
	t       *testing.T
	cmd     *exec.Cmd
	http    string
	mqtt    string
	nats    string
	mu      sync.Mutex
	log     bytes.Buffer
	exited  chan struct{}
	apiKey  string
	dataDir string
}

// hubdBin is built once for the package's tests, in a directory removed by TestMain.
var hubdBin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func buildHubd(t *testing.T) string {
	t.Helper()
	hubdBin.once.Do(func() {
		if hubdBin.dir, hubdBin.err = os.MkdirTemp("", "rules-hubd-*"); hubdBin.err != nil {
			return
		}
		hubdBin.path = filepath.Join(hubdBin.dir, "hubd")
		out, err := exec.Command("go", "build", "-o", hubdBin.path, "github.com/tributary-iot/tributary/cmd/hubd").CombinedOutput()
		if err != nil {
			hubdBin.err = fmt.Errorf("go build hubd: %v\n%s", err, out)
		}
	})
	if hubdBin.err != nil {
		t.Fatal(hubdBin.err)
	}
	return hubdBin.path
}

// startHubd starts hubd on dataDir; extra flags come after the defaults, so they win.
func startHubd(t *testing.T, bin, dataDir string, extra ...string) *hubProc {
	t.Helper()
	p := &hubProc{t: t, apiKey: "kill-test-key", dataDir: dataDir, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, append([]string{"--data-dir", dataDir, "--api-key", p.apiKey, "--log-format", "json",
		"--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0", "--mqtt-ws-addr", "",
		"--coap-addr", "127.0.0.1:0", "--coaps-addr", "", "--nats-addr", "127.0.0.1:0"}, extra...)...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			p.mu.Lock()
			p.log.Write(line)
			p.log.WriteByte('\n')
			p.mu.Unlock()
			var rec map[string]any
			if json.Unmarshal(line, &rec) == nil && rec["msg"] == "hub ready" {
				ready <- rec
			}
		}
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			p.mu.Lock()
			t.Logf("hubd %s log:\n%s", dataDir, tail(p.log.String(), 4000))
			p.mu.Unlock()
		}
	})
	select {
	case rec := <-ready:
		p.http, p.mqtt, p.nats = rec["http"].(string), rec["mqtt"].(string), rec["nats"].(string)
	case <-p.exited:
		t.Fatalf("hubd exited while starting:\n%s", p.log.String())
	case <-time.After(30 * time.Second):
		t.Fatal("hubd not ready after 30s")
	}
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *hubProc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

func (p *hubProc) do(method, path string, body, out any) int {
	p.t.Helper()
	var r io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		r = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(method, "http://"+p.http+path, r)
	req.Header.Set("Authorization", "Bearer "+p.apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			p.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, data)
		}
	}
	return resp.StatusCode
}

func (p *hubProc) stats(rule string) rules.Stats {
	var s rules.Stats
	p.do("GET", "/api/v1/rules/"+rule+"/stats", nil, &s)
	return s
}

// killWorkload is the input of the kill test: events in one global event-time order, sent one
// at a time, so both runs store them in the same order.
const (
	killDevices = 5
	killEvents  = 2000
)

var killStart = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func killEvent(i int) (device string, payload string) {
	at := killStart.Add(time.Duration(i) * 50 * time.Millisecond)
	v := (i * 37) % 100
	if i >= killEvents { // sentinels an hour apart close every window
		at, v = killStart.Add(time.Duration(i-killEvents+1)*time.Hour), 99
	}
	return fmt.Sprintf("k%d", i%killDevices), fmt.Sprintf(`{"v":%d,"ts":%d}`, v, at.UnixMilli())
}

// setupKillHub creates the devices and rules; it returns the device tokens.
func setupKillHub(t *testing.T, p *hubProc) map[string]string {
	tokens := map[string]string{}
	for d := range killDevices {
		id := fmt.Sprintf("k%d", d)
		var out struct{ Token string }
		if code := p.do("POST", "/api/v1/devices", map[string]any{"id": id, "type": "meter"}, &out); code != http.StatusCreated {
			t.Fatalf("create device %s: %d", id, code)
		}
		tokens[id] = out.Token
	}
	for _, spec := range []map[string]any{
		{"name": "k9", "lateness": "0s", "idle_timeout": "0s", "notify": "change",
			"sql":     `SELECT device, avg(v) AS avg_v, max(v) AS max_v, count(*) AS n FROM 'devices/+/telemetry' GROUP BY device, TUMBLING(1s) HAVING max_v > 80`,
			"outputs": []map[string]any{{"kind": "mqtt", "topic": "alerts/k9"}}},
		{"name": "k9-sum", "lateness": "0s", "idle_timeout": "0s",
			"sql": `SELECT count(*) AS windows, avg(avg_v) AS mean, max(max_v) AS top FROM 'rules/k9' GROUP BY TUMBLING(5s)`},
	} {
		if code := p.do("POST", "/api/v1/rules", spec, nil); code != http.StatusCreated {
			t.Fatalf("create rule %s: %d", spec["name"], code)
		}
	}
	for _, r := range []string{"k9", "k9-sum"} {
		eventually(t, 10*time.Second, func() bool { s := p.stats(r); return s.Running && !s.CatchingUp }, "rule %s not running", r)
	}
	return tokens
}

// sendKill publishes events from..to-1 with QoS 1, each acknowledged (so stored) before the next.
func sendKill(t *testing.T, p *hubProc, tokens map[string]string, from, to int) {
	conns := map[string]func(topic, payload string){}
	for id, tok := range tokens {
		c := mqttClient(t, p.mqtt, fmt.Sprintf("%s-%d", id, from), id, tok)
		conns[id] = func(topic, payload string) {
			if tk := c.Publish(topic, 1, false, payload); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
				t.Fatalf("publish: %v", tk.Error())
			}
		}
	}
	for i := from; i < to; i++ {
		dev, payload := killEvent(i)
		conns[dev]("devices/"+dev+"/telemetry", payload)
	}
}

// outputs reads every message the rules published (rules/..., alerts/...) from the hub's
// stream: "subject id payload" lines, sorted, failing on an ID stored twice.
func outputs(t *testing.T, p *hubProc) []string {
	t.Helper()
	nc, err := nats.Connect(p.nats)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, streams.StreamMessages, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"iot.rules.>", "iot.alerts.>"}})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	seen := map[string]bool{}
	for {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			id := m.Headers().Get(streams.HeaderMsgID)
			if seen[id] {
				t.Errorf("message %s stored twice", id)
			}
			seen[id] = true
			out = append(out, m.Subject()+" "+id+" "+string(m.Data()))
		}
		if n == 0 {
			break
		}
	}
	slices.Sort(out)
	return out
}

// settle waits until both rules have processed every event and their outputs are stored.
func settle(t *testing.T, p *hubProc) rules.Stats {
	var k9 rules.Stats
	eventually(t, 30*time.Second, func() bool {
		k9 = p.stats("k9")
		sum := p.stats("k9-sum")
		return k9.EventsIn == killEvents+2 && k9.ConsumerLag == 0 && sum.EventsIn == k9.Results && sum.ConsumerLag == 0 &&
			len(outputs(t, p)) == int(k9.Results+2*k9.Notifications+sum.Results)
	}, "rules did not settle: k9 %+v", k9)
	return k9
}

// TestKill9 kills hubd with SIGKILL while a rule is processing, restarts it on the same data
// directory, finishes the input, and compares everything the rules published with a run that
// was never interrupted: the same messages, each once.
func TestKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs hubd")
	}
	bin := buildHubd(t)
	want := referenceOutputs(t, bin)

	// The interrupted run: killed right after the first 1200 events are stored, while the
	// rules are still processing and publishing.
	dir := t.TempDir()
	p := startHubd(t, bin, dir)
	tokens := setupKillHub(t, p)
	sendKill(t, p, tokens, 0, 1200)
	before := p.stats("k9")
	p.kill()
	p = startHubd(t, bin, dir)
	for _, r := range []string{"k9", "k9-sum"} {
		eventually(t, 20*time.Second, func() bool { s := p.stats(r); return s.Running && !s.CatchingUp }, "rule %s not running after restart", r)
	}
	sendKill(t, p, tokens, 1200, killEvents+2)
	after := settle(t, p)
	got := outputs(t, p)
	t.Logf("killed with k9 at %d events in, %d results; after restart %d results, %d re-emitted outputs skipped as already stored",
		before.EventsIn, before.Results, after.Results, after.DuplicatesSkipped)

	if len(want) < 500 {
		t.Fatalf("the reference run published only %d messages", len(want))
	}
	if !slices.Equal(got, want) {
		missing, extra := diff(want, got), diff(got, want)
		t.Errorf("after kill -9: %d messages, want %d; missing %d, e.g. %q; extra %d, e.g. %q",
			len(got), len(want), len(missing), first(missing), len(extra), first(extra))
	}
}

// reference is the output of an uninterrupted run, made once for the package's tests.
var reference struct {
	once sync.Once
	out  []string
}

// referenceOutputs returns everything the rules publish in a run that is never interrupted.
func referenceOutputs(t *testing.T, bin string) []string {
	t.Helper()
	reference.once.Do(func() {
		ref := startHubd(t, bin, t.TempDir())
		sendKill(t, ref, setupKillHub(t, ref), 0, killEvents+2)
		settle(t, ref)
		reference.out = outputs(t, ref)
		ref.kill()
	})
	if reference.out == nil {
		t.Fatal("the reference run failed (see the first test that made it)")
	}
	return reference.out
}

func diff(a, b []string) []string {
	in := map[string]bool{}
	for _, x := range b {
		in[x] = true
	}
	var out []string
	for _, x := range a {
		if !in[x] {
			out = append(out, x)
		}
	}
	return out
}

func first(xs []string) string {
	if len(xs) == 0 {
		return ""
	}
	return strings.Join(xs[:min(2, len(xs))], " | ")
}
