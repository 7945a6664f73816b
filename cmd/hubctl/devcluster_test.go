package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestDevCluster starts what `hubctl dev cluster` starts (on free ports), creates a device with
// hubctl through hub 1, publishes through hub 2 and reads the message back through hub 1.
func TestDevCluster(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d, err := startDevCluster(context.Background(), devClusterOptions{Dir: dir, Hubs: 2, Step: 100, Bucket: "iot"},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			d.stop()
		}
	})
	var desc bytes.Buffer
	d.describe(&desc)
	for _, want := range []string{"--nats-url " + d.nats.URL(), "hub 1   http://" + d.hubs[0].HTTPAddr(), "hub 2   http://" + d.hubs[1].HTTPAddr(), "API key: tb_dev_"} {
		if !strings.Contains(desc.String(), want) {
			t.Errorf("description lacks %q:\n%s", want, desc.String())
		}
	}
	key := d.hubs[0].APIKey()
	if d.hubs[1].APIKey() != key {
		t.Fatalf("hubs have different API keys")
	}

	hub1, hub2 := "http://"+d.hubs[0].HTTPAddr(), "http://"+d.hubs[1].HTTPAddr()
	var out, errOut bytes.Buffer
	if code := run([]string{"devices", "create", "d1", "--server", hub1, "--api-key", key, "-o", "json"}, &out, &errOut); code != 0 {
		t.Fatalf("hubctl devices create: exit %d: %s", code, errOut.String())
	}
	var dev struct{ Token string }
	if err := json.Unmarshal(out.Bytes(), &dev); err != nil || dev.Token == "" {
		t.Fatalf("hubctl devices create printed %s (%v)", out.String(), err)
	}

	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + d.hubs[1].MQTTAddr()).SetClientID("d1").SetUsername("d1").SetPassword(dev.Token))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("mqtt connect to hub 2: %v", tok.Error())
	}
	if tok := c.Publish("devices/d1/telemetry", 1, false, `{"t":21.5}`); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish to hub 2: %v", tok.Error())
	}
	c.Disconnect(50)

	req, _ := http.NewRequest("GET", hub1+"/api/v1/devices/d1/messages?limit=10", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var page struct {
		Messages []struct{ Payload json.RawMessage }
	}
	json.NewDecoder(resp.Body).Decode(&page)
	resp.Body.Close()
	if len(page.Messages) != 1 || string(page.Messages[0].Payload) != `{"t":21.5}` {
		t.Fatalf("messages of d1 through hub 1: %+v", page.Messages)
	}
	for _, u := range []string{hub1, hub2} {
		if resp, err := http.Get(u + "/readyz"); err != nil || resp.StatusCode != 200 {
			t.Errorf("%s/readyz: %v %v", u, resp, err)
		} else {
			resp.Body.Close()
		}
	}

	// The streams have three replicas.
	nc, err := nats.Connect(d.nats.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	s, err := js.Stream(context.Background(), "IOT")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(context.Background()); err != nil || info.Config.Replicas != 3 {
		t.Errorf("IOT stream: %v replicas (%v), want 3", info.Config.Replicas, err)
	}
	stopped = true
	if err := d.stop(); err != nil {
		t.Errorf("stop: %v", err)
	}

	// The key is kept for the next run.
	again, err := devAPIKey(dir)
	if err != nil || again != key {
		t.Errorf("API key on the next run: %q (%v), want %q", again, err, key)
	}
}

func TestDevClusterUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"dev", "cluster", "--hubs", "0"}, &out, &errOut); code != exitUsage || !strings.Contains(errOut.String(), "--hubs must be 1..9") {
		t.Errorf("--hubs 0: exit %d, %q", code, errOut.String())
	}
	if code := run([]string{"dev", "cluster", "extra"}, &out, &errOut); code != exitUsage {
		t.Errorf("extra argument: exit %d", code)
	}
}
