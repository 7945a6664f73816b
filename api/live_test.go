package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/api"
	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

const testKey = "test-api-key"

// liveHub is the API on a real embedded JetStream bus and device registry.
type liveHub struct {
	bus *streams.Bus
	url string
}

func newLiveHub(t *testing.T) *liveHub {
	t.Helper()
	bus := streamstest.New(t)
	log := streamstest.Logger(t)
	reg, err := devices.New(context.Background(), bus.JetStream(), devices.Config{}, log)
	if err != nil {
		t.Fatal(err)
	}
	a := api.New(api.Deps{Devices: reg, Messages: bus, APIKey: testKey}, log)
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	t.Cleanup(a.CloseLive) // runs first: ends streams so Close does not wait for them
	return &liveHub{bus: bus, url: srv.URL}
}

// publish stores a message on topic with a JSON payload and returns its sequence.
func (h *liveHub) publish(t *testing.T, topic, payload string) uint64 {
	t.Helper()
	env := &streams.Envelope{Topic: topic, DeviceID: strings.Split(topic, "/")[1], ContentType: "application/json",
		Protocol: "http", Payload: []byte(payload)}
	env.Stamp(time.Now())
	seq, err := h.bus.Publish(context.Background(), env)
	if err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
	return seq
}

type sseEvent struct {
	id, event, data string
}

// sseStream reads a live stream's events into a channel.
type sseStream struct {
	events chan sseEvent
	resp   *http.Response
}

// openSSE connects to /api/v1/stream with query and an optional Last-Event-ID, and waits for
// the server's ": connected" comment, after which every published message is delivered.
func (h *liveHub) openSSE(t *testing.T, query url.Values, lastID string) *sseStream {
	t.Helper()
	req, _ := http.NewRequest("GET", h.url+"/api/v1/stream?"+query.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("GET stream: status %d %s, want 200", resp.StatusCode, body)
	}
	s := &sseStream{events: make(chan sseEvent, 10000), resp: resp}
	connected := make(chan struct{})
	go readSSE(resp.Body, s.events, connected)
	select {
	case <-connected:
	case <-time.After(5 * time.Second):
		t.Fatal("no ': connected' from the stream within 5s")
	}
	t.Cleanup(s.close)
	return s
}

func (s *sseStream) close() { s.resp.Body.Close() }

// readSSE parses an event stream; it closes connected at the first comment line.
func readSSE(r io.Reader, out chan<- sseEvent, connected chan struct{}) {
	defer close(out)
	br := bufio.NewReader(r)
	var ev sseEvent
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if ev.event != "" || ev.data != "" {
				out <- ev
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, ":"):
			if connected != nil {
				close(connected)
				connected = nil
			}
		default:
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimPrefix(v, " ")
			switch k {
			case "id":
				ev.id = v
			case "event":
				ev.event = v
			case "data":
				ev.data += v
			}
		}
	}
}

// next returns the next event within d.
func (s *sseStream) next(t *testing.T, d time.Duration) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			t.Fatal("stream ended")
		}
		return ev
	case <-time.After(d):
		t.Fatalf("no event within %s", d)
	}
	return sseEvent{}
}

func decodeMessage(t *testing.T, data string) api.Message {
	t.Helper()
	var m api.Message
	if err := json.Unmarshal([]byte(data), &m); err != nil {
		t.Fatalf("message %s: %v", data, err)
	}
	return m
}

func TestSSEResumeWithoutGaps(t *testing.T) {
	h := newLiveHub(t)
	q := url.Values{"topic": {"devices/+/telemetry"}}
	var want []uint64
	for i := range 5 {
		want = append(want, h.publish(t, "devices/d1/telemetry", fmt.Sprintf(`{"n":%d}`, i)))
		h.publish(t, "devices/d1/events/other", `{}`) // not matching: must not appear
	}
	// Since 0: everything still in the stream.
	s := h.openSSE(t, url.Values{"topic": {"devices/+/telemetry"}, "since": {"0"}}, "")
	last := ""
	for i := range 5 {
		ev := s.next(t, 5*time.Second)
		if ev.event != "message" || ev.id != strconv.FormatUint(want[i], 10) {
			t.Fatalf("event %d = %+v, want message with id %d", i, ev, want[i])
		}
		if m := decodeMessage(t, ev.data); string(m.Payload) != fmt.Sprintf(`{"n":%d}`, i) || m.Seq != want[i] {
			t.Fatalf("event %d: payload %s seq %d, want {\"n\":%d} seq %d", i, m.Payload, m.Seq, i, want[i])
		}
		last = ev.id
	}
	s.close()

	// Published while the client was away.
	want = want[:0]
	for i := 5; i < 12; i++ {
		want = append(want, h.publish(t, fmt.Sprintf("devices/d%d/telemetry", i%3), fmt.Sprintf(`{"n":%d}`, i)))
	}
	s = h.openSSE(t, q, last)
	for i := range want {
		ev := s.next(t, 5*time.Second)
		if ev.id != strconv.FormatUint(want[i], 10) {
			t.Fatalf("after resume, event %d has id %s, want %d (no gap, no repeat)", i, ev.id, want[i])
		}
	}
	// Nothing else is pending: the next event is one published now.
	sentinel := h.publish(t, "devices/d1/telemetry", `{"n":"sentinel"}`)
	if ev := s.next(t, 5*time.Second); ev.id != strconv.FormatUint(sentinel, 10) {
		t.Fatalf("after the resumed messages got id %s, want the sentinel %d", ev.id, sentinel)
	}
}

func TestSSELiveFromConnect(t *testing.T) {
	h := newLiveHub(t)
	h.publish(t, "devices/d1/telemetry", `{"old":true}`)
	s := h.openSSE(t, url.Values{"topic": {"devices/d1/#"}}, "")
	seq := h.publish(t, "devices/d1/state/reported", `{"new":true}`)
	ev := s.next(t, 5*time.Second)
	if ev.id != strconv.FormatUint(seq, 10) {
		t.Fatalf("first event id %s, want %d: a stream without a resume point starts at the request", ev.id, seq)
	}
	m := decodeMessage(t, ev.data)
	if m.Topic != "devices/d1/state/reported" || m.Device != "d1" || m.Protocol != "http" {
		t.Errorf("message = %+v, want topic devices/d1/state/reported, device d1, protocol http", m)
	}
}

func TestSSEFieldProjection(t *testing.T) {
	h := newLiveHub(t)
	s := h.openSSE(t, url.Values{"topic": {"devices/+/telemetry"}, "fields": {"temperature,env.humidity"}}, "")
	h.publish(t, "devices/d1/telemetry", `{"temperature":21.5,"env":{"humidity":40,"co2":600},"fw":"1.2"}`)
	h.publish(t, "devices/d1/telemetry", `{"fw":"1.3"}`) // none of the fields: not sent
	senml := &streams.Envelope{Topic: "devices/d2/telemetry", DeviceID: "d2", ContentType: "application/senml+json",
		Payload: []byte(`[{"n":"temperature","v":19},{"n":"pressure","v":1000}]`)}
	senml.Stamp(time.Now())
	if _, err := h.bus.Publish(context.Background(), senml); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`{"env.humidity":40,"temperature":21.5}`, `{"temperature":19}`} {
		m := decodeMessage(t, s.next(t, 5*time.Second).data)
		if string(m.Payload) != want || m.ContentType != "application/json" {
			t.Errorf("projected payload %s (%s), want %s (application/json)", m.Payload, m.ContentType, want)
		}
	}

	all := h.openSSE(t, url.Values{"topic": {"devices/d3/telemetry"}, "fields": {"*"}}, "")
	h.publish(t, "devices/d3/telemetry", `{"a":{"b":1},"c":true}`)
	if m := decodeMessage(t, all.next(t, 5*time.Second).data); string(m.Payload) != `{"a.b":1,"c":true}` {
		t.Errorf("fields=* payload %s, want every field flattened", m.Payload)
	}
}

func TestLiveBadRequests(t *testing.T) {
	h := newLiveHub(t)
	for _, tt := range []struct {
		query, auth string
		status      int
		want        string
	}{
		{"topic=devices/%23/x", testKey, 400, "topic"},
		{"since=x", testKey, 400, "sequence"},
		{"fields=" + strings.Repeat("x", 200), testKey, 400, "fields"},
		{"", "", 401, "missing API key"},
		{"", "wrong", 401, "invalid API key"},
		{"access_token=tbt.1.xyz", "", 401, "invalid browser token"},
		{"access_token=" + testKey, "", 401, "never the API key"},
	} {
		req, _ := http.NewRequest("GET", h.url+"/api/v1/stream?"+tt.query, nil)
		if tt.auth != "" {
			req.Header.Set("Authorization", "Bearer "+tt.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.want) {
			t.Errorf("GET stream?%s: %d %s, want %d mentioning %q", tt.query, resp.StatusCode, body, tt.status, tt.want)
		}
	}
}

// TestSSESlowConsumer: a client that stops reading gets a "skipped" event when it reads again,
// its count and range match the gap exactly, and a reading client meanwhile gets everything.
func TestSSESlowConsumer(t *testing.T) {
	h := newLiveHub(t)
	q := url.Values{"topic": {"devices/+/telemetry"}}

	// The slow client: a raw connection that is not read.
	addr := strings.TrimPrefix(h.url, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /api/v1/stream?%s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", q.Encode(), addr, testKey)
	slow := bufio.NewReader(conn)
	for {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := slow.ReadString('\n')
		if err != nil {
			t.Fatalf("slow client: %v", err)
		}
		if strings.HasPrefix(line, ": connected") {
			break
		}
	}
	fast := h.openSSE(t, q, "")

	// More than the stuck client's socket buffers and bounded queue hold, in batches each
	// received by the reading client before the next is sent.
	first, n := h.flood(t, func(want uint64) {
		if ev := fast.next(t, 10*time.Second); ev.event != "message" || ev.id != strconv.FormatUint(want, 10) {
			t.Fatalf("reading client got %s %s, want message %d", ev.event, ev.id, want)
		}
	})

	// The slow client now reads everything that is left.
	// Clear the connect deadline before reading: the flood can outlast it on a loaded machine,
	// and a reader started first would see a timeout and end the stream.
	conn.SetReadDeadline(time.Time{})
	events := make(chan sseEvent, n+10)
	go readSSE(slow, events, nil)
	next, delivered, skipped, skipEvents := first, 0, 0, 0
	for next < first+uint64(n) {
		var ev sseEvent
		select {
		case ev = <-events:
		case <-time.After(10 * time.Second):
			t.Fatalf("slow client: stuck at seq %d after %d delivered and %d skipped", next, delivered, skipped)
		}
		switch ev.event {
		case "message":
			if id, _ := strconv.ParseUint(ev.id, 10, 64); id != next {
				t.Fatalf("slow client got seq %d, want %d (skips must be announced)", id, next)
			}
			delivered++
			next++
		case "skipped":
			var sk struct {
				Skipped  int    `json:"skipped"`
				FirstSeq uint64 `json:"first_seq"`
				LastSeq  uint64 `json:"last_seq"`
			}
			if err := json.Unmarshal([]byte(ev.data), &sk); err != nil {
				t.Fatal(err)
			}
			if sk.FirstSeq != next || sk.LastSeq != next+uint64(sk.Skipped)-1 {
				t.Fatalf("skipped %+v, want it to start at %d and cover %d", sk, next, sk.Skipped)
			}
			skipped += sk.Skipped
			skipEvents++
			next += uint64(sk.Skipped)
		default:
			t.Fatalf("unexpected event %+v", ev)
		}
	}
	if skipped == 0 {
		t.Fatalf("slow client: %d delivered and none skipped; want the bounded buffer to overflow", delivered)
	}
	t.Logf("slow client: %d delivered, %d skipped in %d skipped events", delivered, skipped, skipEvents)
}

// skippedTotal reads tributary_live_skipped_total from /metrics.
func (h *liveHub) skippedTotal(t *testing.T) float64 {
	t.Helper()
	resp, err := http.Get(h.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "tributary_live_skipped_total "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// flood publishes 40 KiB messages in batches of 20 while a stuck client is connected. After
// each batch, read(seq) is called for every message of it, so a reading client must keep up
// while the stuck one does not hold it back. It goes on until the hub has skipped messages for
// the stuck client (once the client's socket buffers and its bounded queue are full, whatever
// the kernel's buffer sizes) and two batches more, and returns the first sequence and count.
func (h *liveHub) flood(t *testing.T, read func(seq uint64)) (first uint64, n int) {
	t.Helper()
	const batch, most = 20, 2000
	pad := strings.Repeat("x", 40<<10)
	base := h.skippedTotal(t)
	extra := -1
	for n < most && extra != 0 {
		for j := n; j < n+batch; j++ {
			seq := h.publish(t, "devices/d1/telemetry", fmt.Sprintf(`{"n":%d,"pad":"%s"}`, j, pad))
			if j == 0 {
				first = seq
			}
		}
		for j := n; j < n+batch; j++ {
			read(first + uint64(j))
		}
		n += batch
		switch {
		case extra > 0:
			extra--
		case extra < 0 && h.skippedTotal(t) > base:
			extra = 2
		}
	}
	if extra != 0 {
		t.Fatalf("after %d messages of 40 KiB the hub skipped none for the stuck client; want its buffer bounded", n)
	}
	return first, n
}

// TestShutdownEndsLiveStreams: an http.Server's Shutdown ends open SSE and WebSocket streams
// instead of waiting out its deadline.
func TestShutdownEndsLiveStreams(t *testing.T) {
	bus := streamstest.New(t)
	log := streamstest.Logger(t)
	reg, err := devices.New(context.Background(), bus.JetStream(), devices.Config{}, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: api.New(api.Deps{Devices: reg, Messages: bus, APIKey: testKey}, log).Handler()}
	go srv.Serve(ln)
	h := &liveHub{bus: bus, url: "http://" + ln.Addr().String()}
	sse := h.openSSE(t, url.Values{"topic": {"#"}}, "")
	ws := h.dialWS(t, url.Values{"topic": {"#"}}).startReading(t)
	ws.expect(t, "subscribed", "#")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with open live streams: %v, want nil within 3s", err)
	}
	select {
	case _, ok := <-sse.events:
		if ok {
			t.Error("SSE stream delivered an event after shutdown, want it closed")
		}
	case <-time.After(3 * time.Second):
		t.Error("SSE stream still open 3s after shutdown")
	}
	select {
	case <-ws.frames:
	case <-time.After(3 * time.Second):
		t.Error("WebSocket still open 3s after shutdown")
	}
}
