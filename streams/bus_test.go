package streams_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

func TestPublishSubscribeAndNATSClients(t *testing.T) {
	b := streamstest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// A plain nats.go application on the embedded server's listener.
	nc, err := nats.Connect(b.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	natsSub, err := nc.SubscribeSync("iot.devices.*.telemetry")
	if err != nil {
		t.Fatal(err)
	}
	nc.Flush()

	got := make(chan *streams.Envelope, 10)
	subCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- b.Subscribe(subCtx, streams.Subscription{Filters: []string{"devices/+/telemetry"}, StartSeq: 1}, func(e *streams.Envelope) { got <- e })
	}()
	defer func() { stop(); <-done }()

	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	env := &streams.Envelope{DeviceID: "d1", Topic: "devices/d1/telemetry", EventTime: at, ContentType: "application/json",
		Protocol: "mqtt", Payload: []byte(`{"t":1}`), Meta: map[string]string{"k": "v"}}
	env.Stamp(time.Now())
	seq, err := b.Publish(ctx, env)
	if err != nil || seq == 0 {
		t.Fatalf("Publish = %d, %v", seq, err)
	}
	if _, err := b.Publish(ctx, &streams.Envelope{Topic: "devices/d1/events/x", Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-got:
		if e.ID != env.ID || e.DeviceID != "d1" || e.Topic != env.Topic || !e.EventTime.Equal(at) || string(e.Payload) != `{"t":1}` ||
			e.Protocol != "mqtt" || e.ContentType != "application/json" || e.Meta["k"] != "v" || e.Seq != seq {
			t.Errorf("got %+v, want the published envelope at seq %d", e, seq)
		}
	case <-ctx.Done():
		t.Fatal("subscriber got nothing")
	}
	select {
	case e := <-got:
		t.Errorf("subscriber got %s, which its filter excludes", e.Topic)
	case <-time.After(200 * time.Millisecond):
	}
	m, err := natsSub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("nats subscriber: %v", err)
	}
	if string(m.Data) != `{"t":1}` || m.Header.Get(streams.HeaderDevice) != "d1" {
		t.Errorf("nats subscriber got %q %v", m.Data, m.Header)
	}
	// Same ID again: stored once.
	seq2, err := b.Publish(ctx, env)
	if err != nil || seq2 != seq {
		t.Errorf("republish of the same ID = seq %d, %v; want the original %d", seq2, err, seq)
	}
}

func TestLatestPages(t *testing.T) {
	b := streamstest.New(t)
	ctx := context.Background()
	for i := range 25 {
		for _, dev := range []string{"a", "b"} {
			if _, err := b.Publish(ctx, &streams.Envelope{DeviceID: dev, Topic: "devices/" + dev + "/telemetry", Payload: fmt.Appendf(nil, `{"i":%d}`, i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	page, err := b.Latest(ctx, []string{"devices/a/#"}, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Messages) != 10 || string(page.Messages[0].Payload) != `{"i":15}` || string(page.Messages[9].Payload) != `{"i":24}` {
		t.Fatalf("first page: %d messages from %s to %s, want 10 from i=15 to i=24", len(page.Messages), first(page), last(page))
	}
	page, err = b.Latest(ctx, []string{"devices/a/#"}, 10, page.Before)
	if err != nil || len(page.Messages) != 10 || string(page.Messages[0].Payload) != `{"i":5}` {
		t.Fatalf("second page: %v %d from %s", err, len(page.Messages), first(page))
	}
	page, err = b.Latest(ctx, []string{"devices/a/#"}, 10, page.Before)
	if err != nil || len(page.Messages) != 5 || page.Before != 0 {
		t.Fatalf("last page: %v %d messages, before %d; want 5 and 0", err, len(page.Messages), page.Before)
	}
	for _, m := range page.Messages {
		if m.DeviceID != "a" {
			t.Errorf("got device %s in a's messages", m.DeviceID)
		}
	}
	last, err := b.Last(ctx, "devices/b/telemetry")
	if err != nil || last == nil || string(last.Payload) != `{"i":24}` {
		t.Errorf("Last = %v, %v", last, err)
	}
	if none, err := b.Last(ctx, "devices/zz/telemetry"); none != nil || err != nil {
		t.Errorf("Last of empty topic = %v, %v; want nil, nil", none, err)
	}
}

func first(p streams.Page) string {
	if len(p.Messages) == 0 {
		return "-"
	}
	return string(p.Messages[0].Payload)
}

func last(p streams.Page) string {
	if len(p.Messages) == 0 {
		return "-"
	}
	return string(p.Messages[len(p.Messages)-1].Payload)
}

func TestDeadLetters(t *testing.T) {
	b := streamstest.New(t)
	ctx := context.Background()
	env := &streams.Envelope{DeviceID: "d1", Topic: "devices/d1/tele metry", Payload: []byte("{")}
	env.Stamp(time.Now())
	if err := b.DeadLetter(ctx, env, "invalid payload: unexpected end"); err != nil {
		t.Fatal(err)
	}
	page, err := b.DeadLetters(ctx, "", 10, 0)
	if err != nil || len(page.Messages) != 1 {
		t.Fatalf("DeadLetters = %d, %v", len(page.Messages), err)
	}
	dl := page.Messages[0]
	if dl.Topic != env.Topic || dl.Meta[streams.MetaReason] != "invalid payload: unexpected end" || dl.DeviceID != "d1" {
		t.Errorf("dead letter = %+v", dl)
	}
	if page, _ := b.DeadLetters(ctx, "other", 10, 0); len(page.Messages) != 0 {
		t.Errorf("dead letters of another device: got %d, want 0", len(page.Messages))
	}
}
