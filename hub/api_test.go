package hub_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tributary-iot/tributary/hub/hubtest"
)

// mqttTry connects and disconnects, returning the connect error.
func mqttTry(addr, user, pass string) error {
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(user + "-try").SetUsername(user).SetPassword(pass).SetAutoReconnect(false))
	tok := c.Connect()
	if !tok.WaitTimeout(5 * time.Second) {
		return fmt.Errorf("connect timed out")
	}
	if tok.Error() != nil {
		return tok.Error()
	}
	c.Disconnect(10)
	return nil
}

func TestDeviceAPI(t *testing.T) {
	h := hubtest.Start(t)

	// No key, wrong key.
	for _, auth := range []string{"", "Bearer nope"} {
		req, _ := http.NewRequest("GET", h.URL+"/api/v1/devices", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), `"error"`) {
			t.Errorf("auth %q: got %d %s, want 401 with an error", auth, resp.StatusCode, body)
		}
	}

	var created struct {
		ID, Name, Type, Token string
		Tags                  map[string]string
		Location              struct{ Lat, Lon float64 }
	}
	code := h.Do("POST", "/api/v1/devices", map[string]any{"id": "pump-1", "name": "Pump 1", "type": "pump",
		"tags": map[string]string{"site": "north"}, "location": map[string]float64{"lat": 52.5, "lon": 13.4}}, &created)
	if code != http.StatusCreated || created.ID != "pump-1" || len(created.Token) < 22 || created.Tags["site"] != "north" || created.Location.Lat != 52.5 {
		t.Fatalf("create: %d %+v", code, created)
	}
	h.CreateDevice("pump-2", map[string]any{"type": "pump", "tags": map[string]string{"site": "south"}})
	h.CreateDevice("valve-1", map[string]any{"type": "valve", "name": "Main valve"})

	var errBody struct{ Error string }
	tests := []struct {
		method, path string
		body         any
		code         int
		says         string
	}{
		{"POST", "/api/v1/devices", map[string]any{"id": "pump-1"}, 409, "already exists"},
		{"POST", "/api/v1/devices", map[string]any{"id": "bad id!"}, 400, "must match"},
		{"POST", "/api/v1/devices", map[string]any{"id": "-x"}, 400, "must match"},
		{"POST", "/api/v1/devices", map[string]any{"id": "x", "colour": "red"}, 400, `unknown field "colour"`},
		{"POST", "/api/v1/devices", []byte(`{"id": "x",`), 400, "not valid JSON"},
		{"POST", "/api/v1/devices", []byte(`{"id": 5}`), 400, `field "id"`},
		{"POST", "/api/v1/devices", map[string]any{"id": "x", "location": map[string]float64{"lat": 91}}, 400, "location"},
		{"GET", "/api/v1/devices/nope", nil, 404, "not found"},
		{"GET", "/api/v1/devices?limit=0", nil, 400, "limit"},
		{"GET", "/api/v1/devices?tag=site", nil, 400, "key:value"},
		{"DELETE", "/api/v1/devices/nope", nil, 404, "not found"},
		{"GET", "/api/v1/devices/nope/messages", nil, 404, "not found"},
		{"GET", "/api/v1/nothing-here", nil, 404, "no such endpoint"},
	}
	for _, tt := range tests {
		errBody.Error = ""
		if code := h.Do(tt.method, tt.path, tt.body, &errBody); code != tt.code || !strings.Contains(errBody.Error, tt.says) {
			t.Errorf("%s %s: got %d %q, want %d mentioning %q", tt.method, tt.path, code, errBody.Error, tt.code, tt.says)
		}
	}

	var list struct {
		Devices []struct{ ID string }
		Next    string
	}
	ids := func() string {
		var s []string
		for _, d := range list.Devices {
			s = append(s, d.ID)
		}
		return strings.Join(s, ",")
	}
	for _, q := range []struct{ query, want string }{
		{"", "pump-1,pump-2,valve-1"},
		{"?type=pump", "pump-1,pump-2"},
		{"?tag=site:south", "pump-2"},
		{"?q=main", "valve-1"},
		{"?q=PUMP&tag=site:north", "pump-1"},
	} {
		list.Devices = nil
		if code := h.Do("GET", "/api/v1/devices"+q.query, nil, &list); code != 200 || ids() != q.want {
			t.Errorf("list %q: %d %s, want %s", q.query, code, ids(), q.want)
		}
	}
	list.Devices = nil
	h.Do("GET", "/api/v1/devices?limit=2", nil, &list)
	if ids() != "pump-1,pump-2" || list.Next != "pump-2" {
		t.Errorf("page 1: %s next %q", ids(), list.Next)
	}
	cursor := list.Next
	list.Devices, list.Next = nil, ""
	h.Do("GET", "/api/v1/devices?limit=2&cursor="+cursor, nil, &list)
	if ids() != "valve-1" || list.Next != "" {
		t.Errorf("page 2: %s next %q", ids(), list.Next)
	}

	var patched struct {
		Name string
		Tags map[string]string
		Type string
	}
	if code := h.Do("PATCH", "/api/v1/devices/pump-2", map[string]any{"name": "Second pump"}, &patched); code != 200 || patched.Name != "Second pump" || patched.Tags["site"] != "south" || patched.Type != "pump" {
		t.Errorf("patch: %d %+v (tags and type must be kept)", code, patched)
	}

	var rotated struct{ Token string }
	if code := h.Do("POST", "/api/v1/devices/pump-1/token", nil, &rotated); code != 200 || rotated.Token == "" || rotated.Token == created.Token {
		t.Fatalf("rotate: %d %q", code, rotated.Token)
	}
	if err := mqttTry(h.MQTTAddr(), "pump-1", created.Token); err == nil {
		t.Error("old token still accepted over MQTT after rotation")
	}
	if err := mqttTry(h.MQTTAddr(), "pump-1", rotated.Token); err != nil {
		t.Errorf("new token refused over MQTT: %v", err)
	}
	if code := h.Do("DELETE", "/api/v1/devices/valve-1", nil, nil); code != http.StatusNoContent {
		t.Errorf("delete: %d", code)
	}
	if code := h.Do("GET", "/api/v1/devices/valve-1", nil, nil); code != 404 {
		t.Errorf("get after delete: %d, want 404", code)
	}

	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200} {
		resp, err := http.Get(h.URL + path)
		if err != nil || resp.StatusCode != want {
			t.Errorf("%s: %v %v", path, resp.Status, err)
		}
		resp.Body.Close()
	}
}
