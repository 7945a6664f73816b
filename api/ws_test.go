package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// browserToken gets a token with the API key.
func (h *liveHub) browserToken(t *testing.T) string {
	t.Helper()
	req, _ := http.NewRequest("POST", h.url+"/api/v1/tokens", strings.NewReader(`{"ttl":"5m"}`))
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || resp.StatusCode != 201 {
		t.Fatalf("POST tokens: %d %v, want 201 and a token", resp.StatusCode, err)
	}
	if d := time.Until(tok.ExpiresAt); d < 4*time.Minute || d > 5*time.Minute {
		t.Errorf("token expires in %s, want the asked-for 5m", d)
	}
	// The token works in the Authorization header on the REST API too.
	req, _ = http.NewRequest("GET", h.url+"/api/v1/devices", nil)
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET devices with a browser token: %s, want 200", resp.Status)
	}
	return tok.Token
}

type wsFrame struct {
	Type         string          `json:"type"`
	Subscription string          `json:"subscription"`
	Topic        string          `json:"topic"`
	Error        string          `json:"error"`
	Seq          uint64          `json:"seq"`
	Payload      json.RawMessage `json:"payload"`
	Skipped      int             `json:"skipped"`
	FirstSeq     uint64          `json:"first_seq"`
	LastSeq      uint64          `json:"last_seq"`
}

type wsClient struct {
	conn   *websocket.Conn
	frames chan wsFrame
}

// dialWS connects with a browser token in the URL; reading starts only with startReading.
func (h *liveHub) dialWS(t *testing.T, query url.Values) *wsClient {
	t.Helper()
	if query == nil {
		query = url.Values{}
	}
	query.Set("access_token", h.browserToken(t))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.url, "http")+"/api/v1/ws?"+query.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetReadLimit(1 << 20)
	t.Cleanup(func() { conn.CloseNow() })
	return &wsClient{conn: conn, frames: make(chan wsFrame, 10000)}
}

func (c *wsClient) startReading(t *testing.T) *wsClient {
	go func() {
		defer close(c.frames)
		for {
			_, data, err := c.conn.Read(context.Background())
			if err != nil {
				return
			}
			var f wsFrame
			if err := json.Unmarshal(data, &f); err != nil {
				t.Errorf("frame %s: %v", data, err)
				return
			}
			c.frames <- f
		}
	}()
	return c
}

func (c *wsClient) send(t *testing.T, req string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, []byte(req)); err != nil {
		t.Fatal(err)
	}
}

func (c *wsClient) next(t *testing.T) wsFrame {
	t.Helper()
	select {
	case f, ok := <-c.frames:
		if !ok {
			t.Fatal("connection ended")
		}
		return f
	case <-time.After(10 * time.Second):
		t.Fatal("no frame within 10s")
	}
	return wsFrame{}
}

// expect reads the next frame and checks its type and topic or subscription.
func (c *wsClient) expect(t *testing.T, typ, topic string) wsFrame {
	t.Helper()
	f := c.next(t)
	if f.Type != typ || (f.Topic != topic && f.Subscription != topic) {
		t.Fatalf("got %+v, want %s for %s", f, typ, topic)
	}
	return f
}

func TestWebSocketSubscriptions(t *testing.T) {
	h := newLiveHub(t)
	c := h.dialWS(t, nil).startReading(t)
	c.send(t, `{"op":"subscribe","topic":"devices/d1/telemetry","fields":["t"]}`)
	c.expect(t, "subscribed", "devices/d1/telemetry")
	c.send(t, `{"op":"subscribe","topic":"devices/+/events/#"}`)
	c.expect(t, "subscribed", "devices/+/events/#")

	tel := h.publish(t, "devices/d1/telemetry", `{"t":1,"x":2}`)
	h.publish(t, "devices/d2/telemetry", `{"t":5}`) // matches neither
	ev := h.publish(t, "devices/d2/events/boot", `{"reason":"power"}`)
	got := map[string]wsFrame{}
	for range 2 {
		f := c.next(t)
		if f.Type != "message" {
			t.Fatalf("got %+v, want a message", f)
		}
		got[f.Subscription] = f
	}
	if f := got["devices/d1/telemetry"]; f.Seq != tel || string(f.Payload) != `{"t":1}` {
		t.Errorf("telemetry subscription got %+v, want seq %d with projected payload {\"t\":1}", f, tel)
	}
	if f := got["devices/+/events/#"]; f.Seq != ev || string(f.Payload) != `{"reason":"power"}` || f.Topic != "devices/d2/events/boot" {
		t.Errorf("events subscription got %+v, want seq %d with the whole payload", f, ev)
	}

	c.send(t, `{"op":"unsubscribe","topic":"devices/+/events/#"}`)
	c.expect(t, "unsubscribed", "devices/+/events/#")
	h.publish(t, "devices/d3/events/boot", `{}`)
	last := h.publish(t, "devices/d1/telemetry", `{"t":2}`)
	if f := c.expect(t, "message", "devices/d1/telemetry"); f.Seq != last {
		t.Errorf("after unsubscribing got seq %d, want %d", f.Seq, last)
	}
}

func TestWebSocketResumeSince(t *testing.T) {
	h := newLiveHub(t)
	var seqs []uint64
	for i := range 4 {
		seqs = append(seqs, h.publish(t, "devices/d1/telemetry", fmt.Sprintf(`{"n":%d}`, i)))
	}
	c := h.dialWS(t, nil).startReading(t)
	c.send(t, fmt.Sprintf(`{"op":"subscribe","topic":"devices/d1/#","since":%d}`, seqs[1]))
	c.expect(t, "subscribed", "devices/d1/#")
	for _, want := range seqs[2:] {
		if f := c.expect(t, "message", "devices/d1/#"); f.Seq != want {
			t.Fatalf("resumed at seq %d, want %d", f.Seq, want)
		}
	}
	now := h.publish(t, "devices/d1/telemetry", `{"n":"now"}`)
	if f := c.expect(t, "message", "devices/d1/#"); f.Seq != now {
		t.Fatalf("got seq %d, want %d", f.Seq, now)
	}

	// Subscribing in the URL works the same way.
	u := h.dialWS(t, url.Values{"topic": {"devices/d1/telemetry"}, "since": {"0"}, "fields": {"n"}}).startReading(t)
	u.expect(t, "subscribed", "devices/d1/telemetry")
	for i, want := range append(seqs, now) {
		f := u.expect(t, "message", "devices/d1/telemetry")
		if f.Seq != want || (i < 4 && string(f.Payload) != fmt.Sprintf(`{"n":%d}`, i)) {
			t.Fatalf("URL subscription message %d: seq %d payload %s, want seq %d", i, f.Seq, f.Payload, want)
		}
	}
}

func TestWebSocketBadRequests(t *testing.T) {
	h := newLiveHub(t)
	c := h.dialWS(t, nil).startReading(t)
	for _, tt := range []struct{ req, want string }{
		{`{"op":"subscribe","topic":"a/#/b"}`, "topic"},
		{`{"op":"subscribe"}`, "topic"},
		{`{"op":"subscribe","topic":"a","since":-1}`, "JSON"},
		{`{"op":"unsubscribe","topic":"never"}`, "not subscribed"},
		{`{"op":"publish"}`, "op"},
		{`nonsense`, "JSON"},
	} {
		c.send(t, tt.req)
		if f := c.next(t); f.Type != "error" || !strings.Contains(f.Error, tt.want) {
			t.Errorf("%s: got %+v, want an error mentioning %q", tt.req, f, tt.want)
		}
	}
	// Still usable.
	c.send(t, `{"op":"subscribe","topic":"x/y"}`)
	c.expect(t, "subscribed", "x/y")

	// No credential, the API key in the URL, an expired-looking token.
	for _, q := range []string{"", "access_token=" + testKey, "access_token=tbt.100.AAAA"} {
		resp, err := http.Get(h.url + "/api/v1/ws?" + q)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("GET ws?%s: %d %s, want 401", q, resp.StatusCode, body)
		}
	}
}

// TestWebSocketSlowConsumer: as for SSE, a client that does not read is told what it missed,
// and a reading client on the same hub gets everything meanwhile.
func TestWebSocketSlowConsumer(t *testing.T) {
	h := newLiveHub(t)
	slow := h.dialWS(t, nil)
	fast := h.dialWS(t, nil).startReading(t)
	// The slow client reads only its "subscribed" answer, then nothing.
	slow.send(t, `{"op":"subscribe","topic":"devices/+/telemetry"}`)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, data, err := slow.conn.Read(ctx)
	cancel()
	if err != nil || !strings.Contains(string(data), "subscribed") {
		t.Fatalf("slow client: %s, %v; want subscribed", data, err)
	}
	fast.send(t, `{"op":"subscribe","topic":"devices/+/telemetry"}`)
	fast.expect(t, "subscribed", "devices/+/telemetry")

	first, n := h.flood(t, func(want uint64) {
		if f := fast.expect(t, "message", "devices/+/telemetry"); f.Seq != want {
			t.Fatalf("reading client got seq %d, want %d", f.Seq, want)
		}
	})

	slow.startReading(t)
	next, skipped := first, 0
	for next < first+uint64(n) {
		f := slow.next(t)
		switch f.Type {
		case "message":
			if f.Seq != next {
				t.Fatalf("slow client got seq %d, want %d (skips must be announced)", f.Seq, next)
			}
			next++
		case "skipped":
			if f.FirstSeq != next || f.LastSeq != next+uint64(f.Skipped)-1 {
				t.Fatalf("skipped %+v, want it to start at %d", f, next)
			}
			skipped += f.Skipped
			next += uint64(f.Skipped)
		default:
			t.Fatalf("unexpected frame %+v", f)
		}
	}
	if skipped == 0 {
		t.Fatal("slow client: nothing skipped; want the bounded buffer to overflow")
	}
}
