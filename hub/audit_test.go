package hub_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/udp"

	"github.com/tributary-iot/tributary/hub/hubtest"
)

type auditEvent struct {
	Type, Protocol, Source, Principal, Tenant, Outcome, Reason, Object string
	Count                                                              int
	Time                                                               time.Time
}

func readAudit(t *testing.T, h *hubtest.Hub, key, query string) []auditEvent {
	t.Helper()
	var out struct {
		Events []auditEvent
		Error  string
	}
	code, body := call(t, h, key, "GET", "/api/v1/audit?"+query, nil)
	if code != 200 || jsonUnmarshal(body, &out) != nil {
		t.Fatalf("GET audit?%s: %d %s", query, code, body)
	}
	return out.Events
}

func find(events []auditEvent, match func(auditEvent) bool) (auditEvent, bool) {
	for _, e := range events {
		if match(e) {
			return e, true
		}
	}
	return auditEvent{}, false
}

// TestAuditLog: failed and successful logins over HTTP, MQTT and CoAP, key creation and
// revocation, token rotation and ACL denials land on the AUDIT stream with their source
// address, principal, tenant and outcome (folding is tested in package audit; that a tenant's
// admin key reads only its own tenant's events, in TestTenantIsolation).
func TestAuditLog(t *testing.T) {
	t.Parallel()
	h := hubtest.Start(t)
	start := time.Now().UTC()
	if code, _ := call(t, h, hubtest.APIKey, "POST", "/api/v1/tenants", map[string]any{"name": "acme"}); code != 201 {
		t.Fatal("create tenant")
	}
	h.CreateDevice("au1", nil)
	idA, keyA := newKey(t, h, "acme-admin", "acme", "admin")
	for range 5 {
		call(t, h, "wrong-key", "GET", "/api/v1/devices", nil)
	}
	if code, _ := call(t, h, hubtest.APIKey, "POST", "/api/v1/devices/au1/token", nil); code != 200 {
		t.Fatal("rotate")
	}
	if _, ca, err := h.MQTT5(t, "au1", "au1", "wrong-token", nil); err == nil || ca == nil || ca.ReasonCode != 0x87 {
		t.Fatalf("MQTT with a wrong token: %v %+v", err, ca)
	}
	app, _, err := h.MQTT5(t, "aud-app", "app", keyA, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rc := subscribe5(t, app, "devices/au1/telemetry"); rc != 0x87 {
		t.Fatalf("acme subscribes to a default-tenant device: %#x", rc)
	}
	call(t, h, keyA, "GET", "/api/v1/provisioning-keys", nil)
	cc, err := udp.Dial(h.CoAPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cc.Post(ctx, "/devices/au1/telemetry", message.AppJSON, strings.NewReader(`{"t":1}`), message.Option{ID: message.URIQuery, Value: []byte("token=nope")}); err != nil {
		t.Fatal(err)
	}
	if code, _ := call(t, h, hubtest.APIKey, "DELETE", "/api/v1/keys/"+idA, nil); code != 204 {
		t.Fatal("revoke")
	}

	type want struct {
		what  string
		match func(auditEvent) bool
	}
	local := func(e auditEvent) bool { return strings.HasPrefix(e.Source, "127.0.0.1:") }
	wants := []want{
		{"failed API login", func(e auditEvent) bool {
			return e.Type == "login" && e.Protocol == "http" && e.Outcome == "failure" && e.Reason == "invalid API key" && local(e)
		}},
		{"successful admin login", func(e auditEvent) bool {
			return e.Type == "login" && e.Protocol == "http" && e.Outcome == "success" && e.Principal == "admin-key" && local(e)
		}},
		{"key created", func(e auditEvent) bool {
			return e.Type == "key.created" && e.Object == "key:"+idA && e.Tenant == "acme" && e.Principal == "admin-key" && local(e)
		}},
		{"key revoked", func(e auditEvent) bool {
			return e.Type == "key.revoked" && e.Object == "key:"+idA && e.Tenant == "acme" && local(e)
		}},
		{"token rotated", func(e auditEvent) bool {
			return e.Type == "device.token" && e.Object == "device:au1" && e.Tenant == "default" && local(e)
		}},
		{"failed MQTT login", func(e auditEvent) bool {
			return e.Type == "login" && e.Protocol == "mqtt" && e.Outcome == "failure" && e.Principal == "device:au1" && local(e)
		}},
		{"MQTT app login with a scoped key", func(e auditEvent) bool {
			return e.Type == "login" && e.Protocol == "mqtt" && e.Outcome == "success" && e.Principal == "key:"+idA && e.Tenant == "acme" && local(e)
		}},
		{"MQTT subscription denied", func(e auditEvent) bool {
			return e.Type == "acl.denied" && e.Protocol == "mqtt" && e.Object == "subscribe devices/au1/telemetry" && e.Tenant == "acme" && local(e)
		}},
		{"HTTP route denied", func(e auditEvent) bool {
			return e.Type == "acl.denied" && e.Protocol == "http" && e.Tenant == "acme" && strings.Contains(e.Reason, "acts on every tenant") && local(e)
		}},
		{"failed CoAP login", func(e auditEvent) bool {
			return e.Type == "login" && e.Protocol == "coap" && e.Outcome == "failure" && e.Principal == "device:au1" && local(e)
		}},
	}
	var events []auditEvent
	defer func() {
		if t.Failed() {
			for _, w := range wants {
				if _, ok := find(events, w.match); !ok {
					t.Errorf("missing: %s", w.what)
				}
			}
			for _, e := range events {
				t.Logf("%+v", e)
			}
		}
	}()
	hubtest.Eventually(t, 10*time.Second, func() bool {
		events = readAudit(t, h, hubtest.APIKey, "since="+url.QueryEscape(start.Format(time.RFC3339Nano))+"&limit=1000")
		for _, w := range wants {
			if _, ok := find(events, w.match); !ok {
				return false
			}
		}
		return true
	}, "audit events missing")
	if t.Failed() {
		return
	}
	// The type filter.
	for _, e := range readAudit(t, h, hubtest.APIKey, "type=key") {
		if !strings.HasPrefix(e.Type, "key.") {
			t.Errorf("type=key returned %+v", e)
		}
	}
	if code, body := call(t, h, hubtest.APIKey, "GET", "/api/v1/audit?type=*", nil); code != 400 {
		t.Errorf("type=*: %d %s, want 400", code, body)
	}
	_ = events
}
