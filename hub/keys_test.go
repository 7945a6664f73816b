package hub_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"

	"github.com/tributary-iot/tributary/api"
	"github.com/tributary-iot/tributary/auth"
	"github.com/tributary-iot/tributary/hub"
	"github.com/tributary-iot/tributary/hub/hubtest"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

// TestEveryRouteHasAScope walks every authenticated route the hub serves: each has a row in the
// route table, and a key with every scope but the one it needs is refused with 403 naming that
// scope, while the admin key passes the guard.
func TestEveryRouteHasAScope(t *testing.T) {
	t.Parallel()
	h := hubtest.Start(t)
	table := map[string]auth.Scope{}
	for _, r := range api.RouteTable() {
		table[r.Route] = r.Scope
	}
	routes := h.APIRoutes()
	if len(routes) < 60 {
		t.Fatalf("only %d routes registered: %v", len(routes), routes)
	}
	keys := map[auth.Scope]string{}
	for _, need := range auth.Scopes {
		var others []string
		for _, s := range auth.Scopes {
			if s != need && s != auth.ScopeAdmin && !(strings.HasSuffix(string(need), ":read") && s == auth.Scope(strings.TrimSuffix(string(need), ":read")+":write")) {
				others = append(others, string(s))
			}
		}
		_, keys[need] = newKey(t, h, "without "+string(need), "", others...)
	}
	for _, route := range routes {
		scope, ok := table[route]
		if !ok {
			t.Errorf("route %s is served but has no row in the route table", route)
			continue
		}
		if scope == auth.ScopeAny {
			continue
		}
		method, path, _ := strings.Cut(route, " ")
		path = strings.NewReplacer("{id}", "x1", "{name}", "n1", "{cmd}", "c1", "{type}", "t1", "{key}", "k1").Replace(path)
		code, body := call(t, h, keys[scope], method, path, nil)
		if code != http.StatusForbidden || !contains(body, "lacks scope "+string(scope), route) {
			t.Errorf("%s without %s: %d %s, want 403 naming the scope and the route", route, scope, code, body)
		}
		if path == "/api/v1/stream" || path == "/api/v1/ws" {
			continue // live: the admin key would open a stream that does not end
		}
		if code, body := call(t, h, hubtest.APIKey, method, path, nil); code == http.StatusForbidden || code == http.StatusUnauthorized {
			t.Errorf("%s with the admin key: %d %s", route, code, body)
		}
	}
}

// TestScopedKeys: a key is created with its secret shown once, is listed without it, works
// within its scopes, its browser tokens carry its rights, an expired key and a revoked key are
// refused, and the admin key keeps working.
func TestScopedKeys(t *testing.T) {
	t.Parallel()
	h := hubtest.Start(t)
	h.CreateDevice("k1", nil)
	id, secret := newKey(t, h, "reader", "", "devices:read", "streams:read")
	if !strings.HasPrefix(secret, "tbk_"+id+"_") || len(secret) != auth.KeyLen {
		t.Fatalf("secret %q does not name key %s", secret, id)
	}
	code, body := call(t, h, hubtest.APIKey, "GET", "/api/v1/keys", nil)
	if code != 200 || !contains(body, id, `"reader"`, "devices:read") || strings.Contains(body, secret) || strings.Contains(body, "hash") {
		t.Fatalf("list keys: %d %s", code, body)
	}
	if code, body := call(t, h, secret, "GET", "/api/v1/devices/k1", nil); code != 200 || !contains(body, `"id":"k1"`) {
		t.Fatalf("read with the key: %d %s", code, body)
	}
	if code, body := call(t, h, secret, "DELETE", "/api/v1/devices/k1", nil); code != 403 || !contains(body, "lacks scope devices:write") {
		t.Fatalf("delete with a read key: %d %s", code, body)
	}
	if code, body := call(t, h, secret, "GET", "/api/v1/keys", nil); code != 403 || !contains(body, "lacks scope admin") {
		t.Fatalf("list keys with a read key: %d %s", code, body)
	}
	// A browser token minted with the key has the key's rights, and dies with it.
	var tok struct{ Token string }
	code, body = call(t, h, secret, "POST", "/api/v1/tokens", nil)
	if code != 201 {
		t.Fatalf("token with the key: %d %s", code, body)
	}
	_ = jsonUnmarshal(body, &tok)
	if code, _ := call(t, h, tok.Token, "GET", "/api/v1/devices/k1", nil); code != 200 {
		t.Fatalf("read with the key's token: %d", code)
	}
	if code, body := call(t, h, tok.Token, "DELETE", "/api/v1/devices/k1", nil); code != 403 || !contains(body, "lacks scope devices:write") {
		t.Fatalf("delete with the key's token: %d %s", code, body)
	}
	// Bad requests.
	for _, tt := range []struct {
		body map[string]any
		want string
	}{
		{map[string]any{"name": "x", "scopes": []string{"devices:fly"}}, `unknown scope \"devices:fly\"`},
		{map[string]any{"name": "x"}, "at least one"},
		{map[string]any{"scopes": []string{"admin"}}, "name is required"},
		{map[string]any{"name": "x", "scopes": []string{"admin"}, "expires_at": "2001-01-01T00:00:00Z"}, "not in the future"},
		{map[string]any{"name": "x", "scopes": []string{"admin"}, "tenant": "nope"}, `tenant \"nope\" does not exist`},
	} {
		if code, body := call(t, h, hubtest.APIKey, "POST", "/api/v1/keys", tt.body); code != 400 || !strings.Contains(body, tt.want) {
			t.Errorf("create key %v: %d %s, want 400 with %q", tt.body, code, body, tt.want)
		}
	}
	// Expiry.
	exp := time.Now().Add(1500 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	var short struct{ Secret string }
	if code := h.Do("POST", "/api/v1/keys", map[string]any{"name": "short", "scopes": []string{"devices:read"}, "expires_at": exp}, &short); code != 201 {
		t.Fatalf("create expiring key: %d", code)
	}
	if code, _ := call(t, h, short.Secret, "GET", "/api/v1/devices", nil); code != 200 {
		t.Fatalf("expiring key before expiry: %d", code)
	}
	hubtest.Eventually(t, 5*time.Second, func() bool {
		code, body := call(t, h, short.Secret, "GET", "/api/v1/devices", nil)
		return code == 401 && strings.Contains(body, "API key expired")
	}, "expired key still accepted")
	// A live stream opened with the key ends when the key is revoked.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", h.URL+"/api/v1/stream?topic=devices/%23", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("SSE with the key: %v %v", resp, err)
	}
	ended := make(chan int, 1)
	go func() {
		defer resp.Body.Close()
		n, _ := io.Copy(io.Discard, resp.Body)
		ended <- int(n)
	}()
	// Revocation.
	if code, body := call(t, h, hubtest.APIKey, "DELETE", "/api/v1/keys/"+id, nil); code != 204 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	if code := h.Do("PUT", "/api/v1/devices/k1/state/desired", map[string]any{"on": true}, nil); code != 200 {
		t.Fatalf("desired: %d", code)
	}
	select {
	case <-ended:
	case <-ctx.Done():
		t.Fatal("the revoked key's live stream did not end")
	}
	for _, cred := range []string{secret, tok.Token} {
		if code, body := call(t, h, cred, "GET", "/api/v1/devices/k1", nil); code != 401 {
			t.Errorf("revoked key's credential %.12s…: %d %s, want 401", cred, code, body)
		}
	}
	if code, _ := call(t, h, hubtest.APIKey, "DELETE", "/api/v1/keys/"+id, nil); code != 404 {
		t.Errorf("revoke twice: %d, want 404", code)
	}
	if code, _ := call(t, h, hubtest.APIKey, "GET", "/api/v1/devices/k1", nil); code != 200 {
		t.Errorf("admin key after revocations: %d", code)
	}
}

// TestRevocationAcrossInstances: a key revoked on one hub stops working on another hub sharing
// NATS within a second, over HTTP and for its MQTT session.
func TestRevocationAcrossInstances(t *testing.T) {
	t.Parallel()
	ns := streamstest.Server(t)
	ext := func(c *hub.Config) { c.NATSURL = ns.ClientURL(); c.NATSAddr = "" }
	a := hubtest.Start(t, ext)
	b := hubtest.Start(t, ext)
	id, secret := newKey(t, a, "shared", "", "devices:read", "streams:read", "devices:write")
	hubtest.Eventually(t, 2*time.Second, func() bool {
		code, _ := call(t, b, secret, "GET", "/api/v1/devices", nil)
		return code == 200
	}, "key made on a not accepted on b")
	a.CreateDevice("rv1", nil)
	var mu sync.Mutex
	var got []string
	c, ca, err := b.MQTT5(t, "rv-app", "app", secret, func(p *paho5.Publish) {
		mu.Lock()
		got = append(got, p.Topic)
		mu.Unlock()
	})
	if err != nil {
		t.Fatalf("mqtt app login with a scoped key on b: %v %+v", err, ca)
	}
	if rc := subscribe5(t, c, "devices/+/state/desired"); rc != 1 {
		t.Fatalf("subscribe: reason %#x", rc)
	}

	if code, body := call(t, a, hubtest.APIKey, "DELETE", "/api/v1/keys/"+id, nil); code != 204 {
		t.Fatalf("revoke on a: %d %s", code, body)
	}
	start := time.Now()
	hubtest.Eventually(t, time.Second, func() bool {
		code, _ := call(t, b, secret, "GET", "/api/v1/devices", nil)
		return code == 401
	}, "revoked key still accepted on b after 1s")
	t.Logf("revocation effective on the other instance after %v", time.Since(start))
	// The MQTT session of the revoked key receives nothing more and is closed.
	if code := a.Do("PUT", "/api/v1/devices/rv1/state/desired", map[string]any{"on": true}, nil); code != 200 {
		t.Fatalf("desired: %d", code)
	}
	hubtest.Eventually(t, 5*time.Second, func() bool {
		select {
		case <-c.Done():
			return true
		default:
			return false
		}
	}, "revoked key's MQTT session still open")
	mu.Lock()
	defer mu.Unlock()
	if slices.Contains(got, "devices/rv1/state/desired") {
		t.Errorf("revoked key's session received %v", got)
	}
	if _, ca, err := b.MQTT5(t, "rv-app2", "app", secret, nil); err == nil || ca == nil || ca.ReasonCode != 0x87 {
		t.Errorf("MQTT login with the revoked key: %v %+v, want refused 0x87", err, ca)
	}
}

// TestMQTTScopes: an application key needs streams:read to subscribe and devices:write to
// send commands or desired state; the admin key keeps every right.
func TestMQTTScopes(t *testing.T) {
	t.Parallel()
	h := hubtest.Start(t)
	h.CreateDevice("ms1", nil)
	_, writer := newKey(t, h, "writer", "", "devices:write")
	_, reader := newKey(t, h, "reader", "", "streams:read")
	w, _, err := h.MQTT5(t, "w", "app", writer, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, _, err := h.MQTT5(t, "r", "app", reader, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		c    *paho5.Client
		kind string // sub or pub
		arg  string
		want byte
	}{
		{"writer subscribes", w, "sub", "devices/#", 0x87},
		{"reader subscribes", r, "sub", "devices/#", 1},
		{"writer sends a command", w, "pub", "devices/ms1/commands/reboot", 0},
		{"reader sends a command", r, "pub", "devices/ms1/commands/reboot", 0x87},
		{"writer publishes telemetry for a device", w, "pub", "devices/ms1/telemetry", 0x87},
		{"reader publishes desired state", r, "pub", "devices/ms1/state/desired", 0x87},
	} {
		var got byte
		reason := ""
		if tt.kind == "sub" {
			got = subscribe5(t, tt.c, tt.arg)
		} else {
			got, reason = publish5(t, tt.c, tt.arg, `{"on":true}`)
		}
		if got != tt.want {
			t.Errorf("%s %s: reason %#x (%s), want %#x", tt.name, tt.arg, got, reason, tt.want)
		}
		if tt.want == 0x87 && tt.kind == "pub" && !strings.Contains(reason, "lacks scope") {
			t.Errorf("%s: reason string %q, want it to name the missing scope", tt.name, reason)
		}
	}
	if _, ca, err := h.MQTT5(t, "bad", "app", "tbk_0123456789abcdef_"+strings.Repeat("A", 43), nil); err == nil || ca == nil || ca.ReasonCode != 0x87 {
		t.Errorf("MQTT login with an unknown key: %v %+v, want refused 0x87", err, ca)
	}
	_ = fmt.Sprint()
}
