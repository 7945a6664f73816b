package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"

	"github.com/tributary-iot/tributary/hub/hubtest"
)

// call sends an API request with key and returns the status and body.
func call(t *testing.T, h *hubtest.Hub, key, method, path string, body any) (int, string) {
	t.Helper()
	var r io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, h.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if r != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

// newKey creates a scoped key with the admin key and returns its ID and secret.
func newKey(t *testing.T, h *hubtest.Hub, name, tenant string, scopes ...string) (id, secret string) {
	t.Helper()
	body := map[string]any{"name": name, "scopes": scopes}
	if tenant != "" {
		body["tenant"] = tenant
	}
	var out struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
		Error  string `json:"error"`
	}
	if code := h.Do("POST", "/api/v1/keys", body, &out); code != http.StatusCreated {
		t.Fatalf("create key %s: %d %s", name, code, out.Error)
	}
	return out.ID, out.Secret
}

// subscribe5 subscribes and returns the SUBACK reason code.
func subscribe5(t *testing.T, c *paho5.Client, filter string) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if sa != nil && len(sa.Reasons) == 1 {
		return sa.Reasons[0]
	}
	t.Fatalf("subscribe %s: %v", filter, err)
	return 0
}

// publish5 publishes at QoS 1 and returns the PUBACK reason code and reason string.
func publish5(t *testing.T, c *paho5.Client, topic, payload string) (byte, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pr, err := c.Publish(ctx, &paho5.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)})
	if pr != nil {
		reason := ""
		if pr.Properties != nil {
			reason = pr.Properties.ReasonString
		}
		return pr.ReasonCode, reason
	}
	t.Fatalf("publish %s: %v", topic, err)
	return 0, ""
}

func contains(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
