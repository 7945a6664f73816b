package devices_test

import (
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/tributary-iot/tributary/devices/linkformat"
	"github.com/tributary-iot/tributary/hub/hubtest"
)

func locationPath(opts message.Options) string {
	var parts []string
	for _, o := range opts {
		if o.ID == message.LocationPath {
			parts = append(parts, string(o.Value))
		}
	}
	return "/" + strings.Join(parts, "/")
}

// TestResourceDirectory: devices register with POST /rd?ep=<id> and a link-format payload,
// update and remove their registration, and are found with /rd-lookup/ep and /rd-lookup/res
// filters; a registration expires with its lifetime.
func TestResourceDirectory(t *testing.T) {
	h := hubtest.Start(t)
	tok1 := h.CreateDevice("node1", nil)
	tok2 := h.CreateDevice("node2", nil)
	cc := coapDial(t, h)

	// Discovery of the directory itself (RFC 9176 §4.3).
	code, body, _ := coapDo(t, cc, codes.GET, "/.well-known/core", 0, "", "rt=core.rd*")
	if code != codes.Content || !strings.Contains(body, "</rd>") || !strings.Contains(body, "</rd-lookup/res>") {
		t.Errorf("/.well-known/core?rt=core.rd*: %v %q", code, body)
	}

	links1 := `</sensors/temp>;rt="temperature-c";if="sensor";obs,</sensors/light>;rt="light-lux";if="sensor",</actuators/led>;rt="led";if="actuator"`
	code, body, opts := coapDo(t, cc, codes.POST, "/rd", message.AppLinkFormat, links1, "ep=node1", "lt=60", "et=oic.d.sensor", "token="+tok1)
	loc1 := locationPath(opts)
	if code != codes.Created || !strings.HasPrefix(loc1, "/rd/") {
		t.Fatalf("register node1: %v %q, location %s", code, body, loc1)
	}
	code, _, opts = coapDo(t, cc, codes.POST, "/rd", message.AppLinkFormat, `</temp>;rt="temperature-c",<coap://[2001:db8::7]/x>;rt="other"`,
		"ep=node2", "d=floor-2", "base=coap://192.0.2.7:5683", "token="+tok2)
	loc2 := locationPath(opts)
	if code != codes.Created {
		t.Fatalf("register node2: %v", code)
	}

	lookup := func(kind string, queries ...string) []linkformat.Link {
		t.Helper()
		code, body, _ := coapDo(t, cc, codes.GET, "/rd-lookup/"+kind, 0, "", append(queries, "id=node1", "token="+tok1)...)
		if code != codes.Content {
			t.Fatalf("lookup %s %v: %v %q", kind, queries, code, body)
		}
		links, err := linkformat.Parse(body)
		if err != nil {
			t.Fatalf("lookup answer %q: %v", body, err)
		}
		return links
	}
	if eps := lookup("ep"); len(eps) != 2 || eps[0].Target != loc1 || eps[1].Target != loc2 {
		t.Fatalf("all endpoints: %v", eps)
	}
	eps := lookup("ep", "d=floor-2")
	if len(eps) != 1 {
		t.Fatalf("ep lookup d=floor-2: %v", eps)
	}
	if ep, _ := eps[0].Get("ep"); ep != "node2" {
		t.Errorf("ep lookup d=floor-2: %v", eps)
	}
	if base, _ := eps[0].Get("base"); base != "coap://192.0.2.7:5683" {
		t.Errorf("base %q", base)
	}
	if eps := lookup("ep", "rt=led"); len(eps) != 1 || eps[0].Target != loc1 {
		t.Errorf("endpoints with an led: %v", eps)
	}
	res := lookup("res", "rt=temperature-c")
	if len(res) != 2 {
		t.Fatalf("temperature resources: %v", res)
	}
	wantBase1 := "coap://" + cc.LocalAddr().String()
	if res[0].Target != wantBase1+"/sensors/temp" || res[1].Target != "coap://192.0.2.7:5683/temp" {
		t.Errorf("resolved resources %v; want absolute URIs on each endpoint's base", res)
	}
	if anchor, _ := res[0].Get("anchor"); anchor != wantBase1 {
		t.Errorf("anchor %q", anchor)
	}
	if res := lookup("res", "ep=node1", "if=sens*"); len(res) != 2 {
		t.Errorf("node1 sensors (prefix match): %v", res)
	}
	if res := lookup("res", "href=coap://192.0.2.7*"); len(res) != 1 {
		t.Errorf("href prefix: %v", res)
	}
	if res := lookup("res", "count=2", "page=1"); len(res) != 2 {
		t.Errorf("page 1 of 2 per page (5 resources): %v", res)
	}
	if res := lookup("res", "count=2", "page=2"); len(res) != 1 {
		t.Errorf("page 2 of 2 per page: %v", res)
	}

	// Update: new lifetime, new links.
	if code, body, _ := coapDo(t, cc, codes.POST, loc1, message.AppLinkFormat, `</sensors/temp>;rt="temperature-c"`, "lt=120", "id=node1", "token="+tok1); code != codes.Changed {
		t.Fatalf("update: %v %q", code, body)
	}
	if res := lookup("res", "ep=node1"); len(res) != 1 {
		t.Errorf("after update: %v", res)
	}
	if eps := lookup("ep", "ep=node1"); len(eps) != 1 {
		t.Errorf("ep after update: %v", eps)
	} else if lt, _ := eps[0].Get("lt"); lt != "120" {
		t.Errorf("lt after update %q", lt)
	}
	// A device may not touch another's registration.
	if code, body, _ := coapDo(t, cc, codes.DELETE, loc1, 0, "", "id=node2", "token="+tok2); code != codes.Forbidden {
		t.Errorf("node2 deleting node1's registration: %v %q", code, body)
	}
	// The HTTP view.
	var regs struct{ Registrations []map[string]any }
	if jsonCall(t, h, "GET", "/api/v1/rd", nil, &regs); len(regs.Registrations) != 2 {
		t.Errorf("GET /api/v1/rd: %v", regs)
	}
	// Removal.
	if code, _, _ := coapDo(t, cc, codes.DELETE, loc2, 0, "", "id=node2", "token="+tok2); code != codes.Deleted {
		t.Errorf("delete: %v", code)
	}
	if eps := lookup("ep"); len(eps) != 1 {
		t.Errorf("after delete: %v", eps)
	}
	if code, _, _ := coapDo(t, cc, codes.DELETE, loc2, 0, "", "id=node2", "token="+tok2); code != codes.NotFound {
		t.Errorf("delete twice: %v", code)
	}

	// Expiry by lifetime.
	if code, _, _ := coapDo(t, cc, codes.POST, "/rd", message.AppLinkFormat, `</x>`, "ep=node2", "lt=1", "token="+tok2); code != codes.Created {
		t.Fatalf("short registration: %v", code)
	}
	if eps := lookup("ep", "ep=node2"); len(eps) != 1 {
		t.Fatalf("short registration not found: %v", eps)
	}
	eventually(t, 5*time.Second, func() bool { return len(lookup("ep", "ep=node2")) == 0 }, "registration with lt=1 did not expire")
}

// TestResourceDirectoryBadInput: malformed link-format, wrong content format, foreign ep,
// missing credentials and bad parameters are refused with a diagnostic and leave nothing behind.
func TestResourceDirectoryBadInput(t *testing.T) {
	h := hubtest.Start(t)
	tok := h.CreateDevice("rd1", nil)
	cc := coapDial(t, h)
	tests := []struct {
		name  string
		cf    message.MediaType
		body  string
		query []string
		code  codes.Code
		says  string
	}{
		{"malformed link-format", message.AppLinkFormat, `</a>;rt="x,</b>`, []string{"ep=rd1", "token=" + tok}, codes.BadRequest, "malformed link-format"},
		{"no angle brackets", message.AppLinkFormat, `/a;rt=x`, []string{"ep=rd1", "token=" + tok}, codes.BadRequest, "starts with '<'"},
		{"JSON payload", message.AppJSON, `{"a":1}`, []string{"ep=rd1", "token=" + tok}, codes.UnsupportedMediaType, "link-format"},
		{"another device's ep", message.AppLinkFormat, `</a>`, []string{"ep=rd2", "id=rd1", "token=" + tok}, codes.Forbidden, "ep=rd1"},
		{"no credentials", message.AppLinkFormat, `</a>`, []string{"ep=rd1"}, codes.Unauthorized, "credentials"},
		{"wrong token", message.AppLinkFormat, `</a>`, []string{"ep=rd1", "token=nope"}, codes.Unauthorized, "wrong token"},
		{"no ep", message.AppLinkFormat, `</a>`, []string{"key=" + hubtest.APIKey}, codes.BadRequest, "ep="},
		{"bad lifetime", message.AppLinkFormat, `</a>`, []string{"ep=rd1", "lt=soon", "token=" + tok}, codes.BadRequest, "lt="},
		{"bad base", message.AppLinkFormat, `</a>`, []string{"ep=rd1", "base=nowhere", "token=" + tok}, codes.BadRequest, "base="},
		{"ep too long", message.AppLinkFormat, `</a>`, []string{"ep=" + strings.Repeat("e", 64), "key=" + hubtest.APIKey}, codes.BadRequest, "ep="},
	}
	for _, tt := range tests {
		code, body, _ := coapDo(t, cc, codes.POST, "/rd", tt.cf, tt.body, tt.query...)
		if code != tt.code || !strings.Contains(body, tt.says) {
			t.Errorf("%s: %v %q; want %v mentioning %q", tt.name, code, body, tt.code, tt.says)
		}
	}
	if code, body, _ := coapDo(t, cc, codes.GET, "/rd-lookup/ep", 0, "", "key="+hubtest.APIKey); code != codes.Content || body != "" {
		t.Errorf("directory after bad registrations: %v %q; want empty", code, body)
	}
	if code, _, _ := coapDo(t, cc, codes.GET, "/rd-lookup/ep", 0, "", "page=1", "key="+hubtest.APIKey); code != codes.BadRequest {
		t.Errorf("page without count: %v", code)
	}
	if code, _, _ := coapDo(t, cc, codes.GET, "/rd-lookup/ep", 0, ""); code != codes.Unauthorized {
		t.Errorf("lookup without credentials: %v", code)
	}
	if code, _, _ := coapDo(t, cc, codes.PUT, "/rd", message.AppLinkFormat, "</a>", "ep=rd1", "token="+tok); code != codes.MethodNotAllowed {
		t.Errorf("PUT /rd: %v", code)
	}
	// An application may register on behalf of an endpoint that is not a device.
	if code, body, _ := coapDo(t, cc, codes.POST, "/rd", message.AppLinkFormat, `</lamp>;rt="light"`, "ep=legacy-lamp", "base=coap://192.0.2.9", "key="+hubtest.APIKey); code != codes.Created {
		t.Errorf("app registration: %v %q", code, body)
	}
}
