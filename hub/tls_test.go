package hub_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pahov5 "github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	piondtls "github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	coapoptions "github.com/plgd-dev/go-coap/v3/options"
	coapclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/tributary-iot/tributary/hub"
	"github.com/tributary-iot/tributary/hub/hubtest"
	"github.com/tributary-iot/tributary/protocols/coap"
	"github.com/tributary-iot/tributary/tlsconf/tlstest"
)

// tlsHub is a hub serving TLS from files in dir, trusting client certificates of devCA.
type tlsHub struct {
	*hubtest.Hub
	dir        string
	serverCA   *tlstest.CA
	devCA      *tlstest.CA
	serverCert tlstest.Cert
	tokens     map[string]string
}

func startTLS(t *testing.T) *tlsHub {
	t.Helper()
	th := &tlsHub{dir: t.TempDir(), serverCA: tlstest.NewCA(t, "server CA"), devCA: tlstest.NewCA(t, "device CA")}
	th.serverCert = th.serverCA.Server(t, "hub")
	certFile, keyFile := th.serverCert.WriteFiles(t, th.dir, "server")
	caFile := filepath.Join(th.dir, "devices-ca.pem")
	tlstest.WriteFile(t, caFile, th.devCA.PEM)
	th.Hub = hubtest.Start(t, func(c *hub.Config) {
		c.HTTPSAddr, c.MQTTSAddr, c.MQTTWSSAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		c.TLSCert, c.TLSKey, c.TLSClientCA = certFile, keyFile, caFile
		c.TLSReloadInterval = 50 * time.Millisecond
	})
	th.tokens = map[string]string{}
	for _, id := range []string{"d1", "d2", "d3"} {
		th.tokens[id] = th.CreateDevice(id, nil)
	}
	return th
}

// clientTLS trusts the server CA and presents cert (if any).
func (h *tlsHub) clientTLS(cert *tlstest.Cert) *tls.Config {
	c := &tls.Config{RootCAs: h.serverCA.Pool(), ServerName: "localhost"}
	if cert != nil {
		c.Certificates = []tls.Certificate{cert.TLS}
	}
	return c
}

// v3TLS connects with paho 3.1.1 to url (tls:// or wss://); user "" sends no username.
func v3TLS(url, clientID, user, pass string, cfg *tls.Config) (pahov3.Client, error) {
	opts := pahov3.NewClientOptions().AddBroker(url).SetClientID(clientID).SetTLSConfig(cfg).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second)
	if user != "" {
		opts.SetUsername(user).SetPassword(pass)
	}
	c := pahov3.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect to %s timed out", url)
	}
	if err := tok.Error(); err != nil {
		return c, fmt.Errorf("%w (return code %d)", err, tok.(*pahov3.ConnectToken).ReturnCode())
	}
	return c, nil
}

// v5TLS connects with paho.golang (MQTT 5) over TLS; user "" sends neither username nor password.
func v5TLS(t *testing.T, addr, clientID, user, pass string, cfg *tls.Config) (*pahov5.Client, *pahov5.Connack, error) {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, nil, err
	}
	c := pahov5.NewClient(pahov5.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cp := &pahov5.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true}
	if user != "" {
		cp.Username, cp.UsernameFlag = user, true
	}
	if pass != "" {
		cp.Password, cp.PasswordFlag = []byte(pass), true
	}
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		_ = conn.Close()
		return nil, ca, err
	}
	t.Cleanup(func() { _ = c.Disconnect(&pahov5.Disconnect{}) })
	return c, ca, nil
}

// stored reports whether the device's latest messages hold payload, and from which protocol.
func (h *tlsHub) stored(t *testing.T, device, payload string) bool {
	t.Helper()
	var page struct {
		Messages []struct {
			Protocol string
			Payload  json.RawMessage
		}
	}
	if code := h.Do("GET", "/api/v1/devices/"+device+"/messages?limit=20", nil, &page); code != 200 {
		t.Fatalf("messages of %s: %d", device, code)
	}
	for _, m := range page.Messages {
		if string(m.Payload) == payload {
			return true
		}
	}
	return false
}

func (h *tlsHub) expectStored(t *testing.T, device, payload string) {
	t.Helper()
	hubtest.Eventually(t, 5*time.Second, func() bool { return h.stored(t, device, payload) },
		"%s not stored for %s", payload, device)
}

// metric returns the value of the Prometheus sample whose line starts with prefix (0 if none).
func (h *tlsHub) metric(t *testing.T, prefix string) float64 {
	t.Helper()
	resp, err := http.Get(h.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, prefix+" ") {
			var v float64
			fmt.Sscanf(line[len(prefix)+1:], "%g", &v)
			return v
		}
	}
	return 0
}

func TestMQTTOverTLS(t *testing.T) {
	t.Parallel()
	h := startTLS(t)
	addr := h.MQTTSAddr()
	d1Cert := h.devCA.Client(t, "d1", tlstest.Options{})
	d2Cert := h.devCA.Client(t, "sensor-two", tlstest.Options{DNS: []string{"d2"}})

	t.Run("token v3", func(t *testing.T) {
		c, err := v3TLS("tls://"+addr, "d1-v3", "d1", h.tokens["d1"], h.clientTLS(nil))
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		defer c.Disconnect(50)
		payload := `{"via":"mqtts-v3-token"}`
		if tok := c.Publish("devices/d1/telemetry", 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
		h.expectStored(t, "d1", payload)
	})
	t.Run("token v5", func(t *testing.T) {
		c, _, err := v5TLS(t, addr, "d1-v5", "d1", h.tokens["d1"], h.clientTLS(nil))
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		payload := `{"via":"mqtts-v5-token"}`
		if _, err := c.Publish(t.Context(), &pahov5.Publish{Topic: "devices/d1/telemetry", QoS: 1, Payload: []byte(payload)}); err != nil {
			t.Fatalf("publish: %v", err)
		}
		h.expectStored(t, "d1", payload)
	})
	t.Run("certificate without username v5", func(t *testing.T) {
		c, ca, err := v5TLS(t, addr, "cert-v5", "", "", h.clientTLS(&d1Cert))
		if err != nil {
			t.Fatalf("connect: %v (CONNACK %+v)", err, ca)
		}
		payload := `{"via":"mqtts-v5-cert"}`
		if _, err := c.Publish(t.Context(), &pahov5.Publish{Topic: "devices/d1/telemetry", QoS: 1, Payload: []byte(payload)}); err != nil {
			t.Fatalf("publish: %v", err)
		}
		h.expectStored(t, "d1", payload)
		// It is d1, and only d1: another device's topic is refused (MQTT 5: PUBACK not authorized).
		pr, err := c.Publish(t.Context(), &pahov5.Publish{Topic: "devices/d2/telemetry", QoS: 1, Payload: []byte(`{"x":1}`)})
		if pr == nil || pr.ReasonCode != 0x87 {
			t.Fatalf("publish as d1 to d2's topic: %+v, %v; want reason 0x87", pr, err)
		}
		var dev struct{ Status string }
		hubtest.Eventually(t, 5*time.Second, func() bool {
			h.Do("GET", "/api/v1/devices/d1", nil, &dev)
			return dev.Status == "online"
		}, "d1 not shown online after connecting with its certificate (status %q)", dev.Status)
	})
	t.Run("certificate DNS SAN with username v3", func(t *testing.T) {
		// The username names the device; the password is not needed.
		c, err := v3TLS("tls://"+addr, "cert-v3", "d2", "", h.clientTLS(&d2Cert))
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		defer c.Disconnect(50)
		payload := `{"via":"mqtts-v3-cert"}`
		if tok := c.Publish("devices/d2/telemetry", 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
		h.expectStored(t, "d2", payload)
	})
	t.Run("application with a device certificate", func(t *testing.T) {
		// Username app is checked against the API key; the certificate does not make it a device.
		c, err := v3TLS("tls://"+addr, "app-cert", "app", hubtest.APIKey, h.clientTLS(&d1Cert))
		if err != nil {
			t.Fatalf("app over TLS with a client certificate: %v", err)
		}
		c.Disconnect(50)
		if _, err := v3TLS("tls://"+addr, "app-cert-bad", "app", "wrong", h.clientTLS(&d1Cert)); err == nil || !strings.Contains(err.Error(), "(return code 5)") {
			t.Fatalf("app with a wrong key and a device certificate: %v, want return code 5", err)
		}
	})
	t.Run("refused with CONNACK", func(t *testing.T) {
		ghost := h.devCA.Client(t, "ghost", tlstest.Options{})
		for _, tc := range []struct {
			name, user, pass string
			cert             *tlstest.Cert
		}{
			// The right token does not make up for a certificate naming someone else.
			{"username differs from certificate", "d2", h.tokens["d2"], &d1Cert},
			{"certificate for unknown device", "", "", &ghost},
			{"certificate for unknown device, its name as username", "ghost", "", &ghost},
			{"no certificate, no username", "", "", nil},
			{"no certificate, no token", "d1", "", nil},
		} {
			_, ca, err := v5TLS(t, addr, "refused", tc.user, tc.pass, h.clientTLS(tc.cert))
			if err == nil || ca == nil || ca.ReasonCode != 0x87 {
				t.Errorf("v5 %s: CONNACK %+v, %v; want reason 0x87", tc.name, ca, err)
			}
			c, err := v3TLS("tls://"+addr, "refused", tc.user, tc.pass, h.clientTLS(tc.cert))
			if err == nil {
				c.Disconnect(0)
			}
			if err == nil || !strings.Contains(err.Error(), "(return code 5)") {
				t.Errorf("v3 %s: %v, want return code 5 (not authorized)", tc.name, err)
			}
		}
		// The refusals are dead-lettered with their reasons.
		var dead struct {
			Messages []struct{ Device, Reason string }
		}
		hubtest.Eventually(t, 5*time.Second, func() bool {
			dead.Messages = nil
			h.Do("GET", "/api/v1/deadletters?limit=100", nil, &dead)
			found := false
			for _, d := range dead.Messages {
				found = found || (d.Device == "d2" && strings.Contains(d.Reason, "the username is not a name in the client certificate"))
			}
			return found
		}, "no dead letter for d2 saying the username is not in the certificate: %+v", dead.Messages)
	})
	t.Run("refused in the handshake", func(t *testing.T) {
		other := tlstest.NewCA(t, "rogue CA").Client(t, "d1", tlstest.Options{})
		expired := h.devCA.Client(t, "d1", tlstest.Options{Expired: true})
		for _, tc := range []struct {
			name string
			cert tlstest.Cert
			want string
		}{
			{"certificate from another CA", other, "remote error: tls: unknown certificate authority"},
			{"expired certificate", expired, "remote error: tls: expired certificate"},
		} {
			// Go's client sends only certificates of the CAs the server names; a device (or
			// attacker) may send any, as this one does.
			cfg := h.clientTLS(nil)
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tc.cert.TLS, nil }
			// The TLS alert is what the client gets (with TLS 1.3 on its first read).
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
			if err == nil {
				_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, err = conn.Read(make([]byte, 1))
				conn.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
			}
			if _, _, err := v5TLS(t, addr, "bad-cert-v5", "d1", h.tokens["d1"], cfg); err == nil {
				t.Errorf("v5 %s: connected (even with the right token the certificate must not pass)", tc.name)
			}
			if _, err := v3TLS("tls://"+addr, "bad-cert-v3", "d1", h.tokens["d1"], cfg); err == nil {
				t.Errorf("v3 %s: connected", tc.name)
			}
		}
		// A client that does not trust the server's certificate never gets to send CONNECT.
		if _, err := v3TLS("tls://"+addr, "untrusting", "d1", h.tokens["d1"], &tls.Config{RootCAs: x509.NewCertPool(), ServerName: "localhost"}); err == nil {
			t.Error("a client without the server CA connected")
		}
	})
	t.Run("plain TCP on the TLS port", func(t *testing.T) {
		before := h.metric(t, `tributary_tls_handshake_failures_total{listener="mqtt-tls"}`)
		c := pahov3.NewClient(pahov3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("plain").
			SetUsername("d1").SetPassword(h.tokens["d1"]).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
		tok := c.Connect()
		if !tok.WaitTimeout(10 * time.Second) {
			t.Fatal("plain MQTT to the TLS port: no answer within 10s, want the connection closed")
		}
		if tok.Error() == nil {
			c.Disconnect(0)
			t.Fatal("plain MQTT connected to the TLS port")
		}
		hubtest.Eventually(t, 5*time.Second, func() bool {
			return h.metric(t, `tributary_tls_handshake_failures_total{listener="mqtt-tls"}`) > before
		}, "the failed handshake was not counted")
	})
	t.Run("secure WebSocket", func(t *testing.T) {
		d3Cert := h.devCA.Client(t, "d3", tlstest.Options{})
		c, err := v3TLS("wss://"+h.MQTTWSSAddr()+"/mqtt", "d3-wss", "", "", h.clientTLS(&d3Cert))
		if err != nil {
			t.Fatalf("connect with certificate over wss: %v", err)
		}
		defer c.Disconnect(50)
		payload := `{"via":"wss-cert"}`
		if tok := c.Publish("devices/d3/telemetry", 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
		h.expectStored(t, "d3", payload)

		tc, err := v3TLS("wss://"+h.MQTTWSSAddr(), "d3-wss-token", "d3", h.tokens["d3"], h.clientTLS(nil))
		if err != nil {
			t.Fatalf("connect with token over wss: %v", err)
		}
		tc.Disconnect(50)
		if _, err := v3TLS("wss://"+h.MQTTWSSAddr(), "d3-wss-mismatch", "d1", h.tokens["d1"], h.clientTLS(&d3Cert)); err == nil {
			t.Error("wss: username d1 with d3's certificate connected")
		}
	})
}

func TestHTTPS(t *testing.T) {
	t.Parallel()
	h := startTLS(t)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: h.clientTLS(nil)}, Timeout: 10 * time.Second}
	base := "https://" + h.HTTPSAddr()

	req, _ := http.NewRequest("GET", base+"/api/v1/devices", nil)
	req.Header.Set("Authorization", "Bearer "+hubtest.APIKey)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var list struct{ Devices []struct{ ID string } }
	err = json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if resp.StatusCode != 200 || err != nil || len(list.Devices) != 3 {
		t.Fatalf("GET /api/v1/devices over HTTPS: %d %+v %v", resp.StatusCode, list, err)
	}
	if got := resp.TLS.PeerCertificates[0].SerialNumber; got.Cmp(h.serverCert.Serial()) != 0 {
		t.Fatalf("served certificate serial %s, want %s", got, h.serverCert.Serial())
	}
	// The dashboard.
	resp, err = client.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(strings.ToLower(string(page)), "<html") {
		t.Fatalf("dashboard over HTTPS: %d %.100s", resp.StatusCode, page)
	}

	// Live messages over Server-Sent Events, through HTTPS.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ = http.NewRequestWithContext(ctx, "GET", base+"/api/v1/stream?topic=devices/d1/telemetry", nil)
	req.Header.Set("Authorization", "Bearer "+hubtest.APIKey)
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("stream over HTTPS: %d", resp.StatusCode)
	}
	dev, err := v3TLS("tls://"+h.MQTTSAddr(), "d1-sse", "d1", h.tokens["d1"], h.clientTLS(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Disconnect(50)
	payload := `{"via":"sse-over-https"}`
	if tok := dev.Publish("devices/d1/telemetry", 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "sse-over-https") {
			return
		}
	}
	t.Fatalf("the message did not arrive on the HTTPS event stream: %v", sc.Err())
}

// serial is the serial number of the certificate a TLS server at addr presents.
func serial(t *testing.T, addr string, cfg *tls.Config) string {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("TLS dial %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

func TestCertificateReload(t *testing.T) {
	t.Parallel()
	h := startTLS(t)
	cfg := h.clientTLS(nil)
	listeners := map[string]string{"mqtts": h.MQTTSAddr(), "https": h.HTTPSAddr(), "mqtt-wss": h.MQTTWSSAddr()}
	for name, addr := range listeners {
		if got, want := serial(t, addr, cfg), h.serverCert.Serial().String(); got != want {
			t.Fatalf("%s: serial %s, want %s", name, got, want)
		}
	}
	// A device stays connected across the reload.
	dev, err := v3TLS("tls://"+h.MQTTSAddr(), "d1-reload", "d1", h.tokens["d1"], cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Disconnect(50)

	renewed := h.serverCA.Server(t, "hub")
	renewed.WriteFiles(t, h.dir, "server")
	for name, addr := range listeners {
		hubtest.Eventually(t, 5*time.Second, func() bool { return serial(t, addr, cfg) == renewed.Serial().String() },
			"%s: still serving the old certificate after the files changed", name)
	}
	if tok := dev.Publish("devices/d1/telemetry", 1, false, `{"after":"reload"}`); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish on the connection opened before the reload: %v", tok.Error())
	}

	// Invalid new files: the renewed certificate stays, the failure is counted.
	before := h.metric(t, `tributary_tls_reloads_total{result="failed"}`)
	if err := os.WriteFile(filepath.Join(h.dir, "server.key"), []byte("-----BEGIN EC PRIVATE KEY-----\ngarbage\n-----END EC PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hubtest.Eventually(t, 5*time.Second, func() bool {
		return h.metric(t, `tributary_tls_reloads_total{result="failed"}`) > before
	}, "the failed reload was not counted")
	for name, addr := range listeners {
		if got := serial(t, addr, cfg); got != renewed.Serial().String() {
			t.Fatalf("%s: serial %s after an invalid key file, want the renewed %s", name, got, renewed.Serial())
		}
	}
	var ready struct {
		Components struct {
			TLS struct {
				Serial      string
				ReloadError string `json:"reload_error"`
			}
		}
	}
	h.Do("GET", "/readyz", nil, &ready)
	if st := ready.Components.TLS; st.Serial != renewed.Serial().String() || !strings.Contains(st.ReloadError, "server.key") {
		t.Fatalf("/readyz tls = %+v, want serial %s and the reload error naming server.key", st, renewed.Serial())
	}
	if _, err := v3TLS("tls://"+h.MQTTSAddr(), "d2-after", "d2", h.tokens["d2"], cfg); err != nil {
		t.Fatalf("new connection after an invalid key file: %v", err)
	}
}

// dtlsCert dials the hub's DTLS port presenting cert (nil: none), trusting the server CA.
func (h *tlsHub) dtlsCert(t *testing.T, cert *tlstest.Cert) (*coapclient.Conn, error) {
	t.Helper()
	opts := []piondtls.ClientOption{
		piondtls.WithRootCAs(h.serverCA.Pool()),
		piondtls.WithServerName("localhost"),
	}
	if cert != nil {
		opts = append(opts, piondtls.WithCertificates(cert.TLS))
	}
	cc, err := coapdtls.Dial(h.CoAPSAddr(), coapdtls.NewDTLSClientOptions(opts...), coapoptions.WithErrors(func(error) {}))
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc, nil
}

// dtlsHandshake runs a bare DTLS handshake with cert and returns its error.
func (h *tlsHub) dtlsHandshake(t *testing.T, cert tlstest.Cert) error {
	t.Helper()
	addr, err := net.ResolveUDPAddr("udp", h.CoAPSAddr())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := piondtls.DialWithOptions("udp", addr, piondtls.WithRootCAs(h.serverCA.Pool()),
		piondtls.WithServerName("localhost"), piondtls.WithCertificates(cert.TLS))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	return conn.HandshakeContext(ctx)
}

func coapPost(t *testing.T, cc *coapclient.Conn, path, payload string) (codes.Code, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	resp, err := cc.Post(ctx, path, message.AppJSON, strings.NewReader(payload))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	body, _ := resp.ReadBody()
	return resp.Code(), string(body)
}

func TestCoAPOverDTLSWithCertificates(t *testing.T) {
	t.Parallel()
	h := startTLS(t)
	d1Cert := h.devCA.Client(t, "d1", tlstest.Options{})

	cc, err := h.dtlsCert(t, &d1Cert)
	if err != nil {
		t.Fatalf("DTLS with a client certificate: %v", err)
	}
	payload := `{"via":"coaps-cert"}`
	if code, body := coapPost(t, cc, "/devices/d1/telemetry", payload); code != codes.Changed {
		t.Fatalf("POST as d1 by certificate: %s %q, want 2.04", code, body)
	}
	h.expectStored(t, "d1", payload)
	if code, body := coapPost(t, cc, "/devices/d2/telemetry", `{"x":1}`); code != codes.Forbidden {
		t.Fatalf("POST to d2's path with d1's certificate: %s %q, want 4.03", code, body)
	}

	// Pre-shared keys keep working on the same port.
	psk, err := coapdtls.Dial(h.CoAPSAddr(), coapdtls.NewDTLSClientOptions(
		piondtls.WithPSK(func([]byte) ([]byte, error) { return coap.PSKFromToken(h.tokens["d2"]), nil }),
		piondtls.WithPSKIdentityHint([]byte("d2")),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
	), coapoptions.WithErrors(func(error) {}))
	if err != nil {
		t.Fatal(err)
	}
	defer psk.Close()
	if code, body := coapPost(t, psk, "/devices/d2/telemetry", `{"via":"coaps-psk"}`); code != codes.Changed {
		t.Fatalf("POST as d2 by PSK next to certificates: %s %q, want 2.04", code, body)
	}
	h.expectStored(t, "d2", `{"via":"coaps-psk"}`)

	// A certificate session without a client certificate has no identity.
	anon, err := h.dtlsCert(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := coapPost(t, anon, "/devices/d1/telemetry", `{"x":1}`); code != codes.Unauthorized {
		t.Fatalf("POST without a client certificate or PSK: %s %q, want 4.01", code, body)
	}

	// Bad certificates fail the handshake.
	before := h.metric(t, `tributary_tls_handshake_failures_total{listener="coaps"}`)
	for name, cert := range map[string]tlstest.Cert{
		"another CA":     tlstest.NewCA(t, "rogue CA").Client(t, "d1", tlstest.Options{}),
		"expired":        h.devCA.Client(t, "d1", tlstest.Options{Expired: true}),
		"unknown device": h.devCA.Client(t, "ghost", tlstest.Options{}),
	} {
		if err := h.dtlsHandshake(t, cert); err == nil {
			t.Errorf("DTLS handshake with a certificate from %s succeeded", name)
		}
	}
	hubtest.Eventually(t, 5*time.Second, func() bool {
		return h.metric(t, `tributary_tls_handshake_failures_total{listener="coaps"}`) >= before+3
	}, "failed DTLS handshakes not counted: %v, want %v", h.metric(t, `tributary_tls_handshake_failures_total{listener="coaps"}`), before+3)

	// Deleting the device ends what its certificate can do.
	if code := h.Do("DELETE", "/api/v1/devices/d1", nil, nil); code != http.StatusNoContent {
		t.Fatalf("delete d1: %d", code)
	}
	hubtest.Eventually(t, 5*time.Second, func() bool {
		code, _ := coapPost(t, cc, "/devices/d1/telemetry", `{"x":2}`)
		return code == codes.Unauthorized
	}, "the deleted device's certificate session still publishes")
}
