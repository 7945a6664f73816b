package tlsconf_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/tlsconf"
	"github.com/tributary-iot/tributary/tlsconf/tlstest"
)

// serve runs a Listener with cfg; each accepted connection gets "ok\n" and is closed.
func serve(t *testing.T, cfg *tls.Config, name string) string {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := tlsconf.NewListener(inner, cfg, name, 2*time.Second, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("ok\n"))
			_ = c.Close()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	return inner.Addr().String()
}

// serverSerial dials addr and returns the serial of the certificate it presents.
func serverSerial(t *testing.T, addr string, roots *x509.CertPool) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "localhost"})
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("read: %v", err)
	}
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

func TestReload(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "test CA")
	first := ca.Server(t, "hub")
	certFile, keyFile := first.WriteFiles(t, dir, "server")
	store, err := tlsconf.New(tlsconf.Config{CertFile: certFile, KeyFile: keyFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, store.ServerConfig(), "test-reload")
	if got, want := serverSerial(t, addr, ca.Pool()), first.Serial().String(); got != want {
		t.Fatalf("serial %s, want %s", got, want)
	}

	// Renewed: new connections get the new certificate.
	second := ca.Server(t, "hub")
	second.WriteFiles(t, dir, "server")
	store.Check()
	if got, want := serverSerial(t, addr, ca.Pool()), second.Serial().String(); got != want {
		t.Fatalf("after renewal: serial %s, want %s", got, want)
	}

	// Broken files keep the previous certificate and count a failure, once per change.
	failures := tlsconf.ReloadFailures()
	tlstest.WriteFile(t, certFile, []byte("not a certificate"))
	store.Check()
	store.Check()
	if got := tlsconf.ReloadFailures() - failures; got != 1 {
		t.Fatalf("reload failures counted %v, want 1", got)
	}
	if got, want := serverSerial(t, addr, ca.Pool()), second.Serial().String(); got != want {
		t.Fatalf("after a broken certificate file: serial %s, want the previous %s", got, want)
	}
	if st := store.Status(); st.Serial != second.Serial().String() || !strings.Contains(st.ReloadError, certFile) {
		t.Fatalf("Status after a broken file = %+v, want serial %s and an error naming %s", st, second.Serial(), certFile)
	}
	// A certificate with another certificate's key: also kept.
	third := ca.Server(t, "hub")
	tlstest.WriteFile(t, certFile, third.CertPEM) // key file still second's
	store.Check()
	if got := tlsconf.ReloadFailures() - failures; got != 2 {
		t.Fatalf("reload failures counted %v, want 2", got)
	}
	if got, want := serverSerial(t, addr, ca.Pool()), second.Serial().String(); got != want {
		t.Fatalf("after a mismatched key: serial %s, want the previous %s", got, want)
	}
	// The matching key arrives: the pair loads.
	tlstest.WriteFile(t, keyFile, third.KeyPEM)
	store.Check()
	if got, want := serverSerial(t, addr, ca.Pool()), third.Serial().String(); got != want {
		t.Fatalf("after the matching key: serial %s, want %s", got, want)
	}
	if st := store.Status(); st.ReloadError != "" || st.Serial != third.Serial().String() {
		t.Fatalf("Status after a good reload = %+v, want no error and serial %s", st, third.Serial())
	}
}

func TestRunReloads(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "test CA")
	certFile, keyFile := ca.Server(t, "hub").WriteFiles(t, dir, "server")
	store, err := tlsconf.New(tlsconf.Config{CertFile: certFile, KeyFile: keyFile, ReloadInterval: 20 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	done := make(chan error, 1)
	go func() { done <- store.Run(ctx) }()
	next := ca.Server(t, "hub")
	next.WriteFiles(t, dir, "server")
	deadline := time.Now().Add(5 * time.Second)
	for store.Certificate().Leaf.SerialNumber.Cmp(next.Serial()) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("Run did not reload the renewed certificate within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "test CA")
	certFile, keyFile := ca.Server(t, "hub").WriteFiles(t, dir, "server")
	junk := filepath.Join(dir, "junk.pem")
	tlstest.WriteFile(t, junk, []byte("junk"))
	for _, tc := range []struct {
		cfg  tlsconf.Config
		want string
	}{
		{tlsconf.Config{CertFile: certFile}, "tls-key: must be set"},
		{tlsconf.Config{KeyFile: keyFile}, "tls-cert: must be set"},
		{tlsconf.Config{ClientCAFile: junk}, "tls-client-ca: needs tls-cert"},
		{tlsconf.Config{CertFile: filepath.Join(dir, "missing"), KeyFile: keyFile}, "no such file"},
		{tlsconf.Config{CertFile: junk, KeyFile: keyFile}, "tls-cert " + junk},
		{tlsconf.Config{CertFile: certFile, KeyFile: keyFile, ClientCAFile: junk}, "tls-client-ca " + junk + ": no PEM certificate"},
	} {
		_, err := tlsconf.New(tc.cfg, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error containing %q", tc.cfg, err, tc.want)
		}
	}
}

func TestHandshakeFailuresCounted(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "test CA")
	certFile, keyFile := ca.Server(t, "hub").WriteFiles(t, dir, "server")
	store, err := tlsconf.New(tlsconf.Config{CertFile: certFile, KeyFile: keyFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, store.ServerConfig(), "test-failures")
	failures := func() float64 { return tlsconf.HandshakeFailures("test-failures") }

	// Plain TCP on the TLS port: the server answers with a TLS alert, never "ok".
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	data, _ := io.ReadAll(c)
	c.Close()
	if !strings.HasPrefix(string(data), "HTTP/1.0 400 Bad Request") || !strings.Contains(string(data), "use https://") {
		t.Fatalf("plain HTTP on the TLS port was answered %q, want a 400 that says to use TLS", data)
	}
	// A client that does not trust the server's CA.
	if _, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: tlstest.NewCA(t, "other").Pool(), ServerName: "localhost"}); err == nil {
		t.Fatal("a client with another CA completed the handshake")
	}
	deadline := time.Now().Add(5 * time.Second)
	for failures() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("handshake failures counted %v, want 2", failures())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A good client still gets through.
	if got := serverSerial(t, addr, ca.Pool()); got == "" {
		t.Fatal("no certificate")
	}
}

// TestListenerCloseAbortsHandshakes: a client that connects and says nothing does not hold up
// Close.
func TestListenerCloseAbortsHandshakes(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "test CA")
	certFile, keyFile := ca.Server(t, "hub").WriteFiles(t, dir, "server")
	store, err := tlsconf.New(tlsconf.Config{CertFile: certFile, KeyFile: keyFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := tlsconf.NewListener(inner, store.ServerConfig(), "test-close", time.Minute, nil)
	accepted := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		accepted <- err
	}()
	silent, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	time.Sleep(50 * time.Millisecond) // let the handshake start; the assertion below does not depend on it
	closed := make(chan struct{})
	go func() {
		_ = ln.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked on a silent client's handshake")
	}
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
	}
}

func TestDeviceID(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	cert := ca.Client(t, "sensor-1", tlstest.Options{DNS: []string{"sensor-1.example", "alias-1"}, URIs: []string{"urn:dev:uri-1"}}).Leaf
	registered := map[string]bool{"sensor-1": true, "alias-1": true, "urn:dev:uri-1": true, "other": true}
	known := func(id string) bool { return registered[id] }
	for _, tc := range []struct {
		claimed string
		known   func(string) bool
		want    string
		err     error
	}{
		{"", known, "sensor-1", nil},
		{"sensor-1", known, "sensor-1", nil},
		{"alias-1", known, "alias-1", nil},
		{"urn:dev:uri-1", known, "urn:dev:uri-1", nil},
		{"other", known, "", tlsconf.ErrCertMismatch},
		{"sensor-1.example", known, "", tlsconf.ErrCertUnknownDevice},
		{"", func(id string) bool { return id == "alias-1" }, "alias-1", nil},
		{"", func(string) bool { return false }, "", tlsconf.ErrCertUnknownDevice},
	} {
		got, err := tlsconf.DeviceID(cert, tc.claimed, tc.known)
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("DeviceID(claimed %q) = %q, %v; want %q, %v", tc.claimed, got, err, tc.want, tc.err)
		}
	}
}

func TestVerifyClient(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "devices CA")
	certFile, keyFile := ca.Server(t, "hub").WriteFiles(t, dir, "server")
	caFile := filepath.Join(dir, "ca.pem")
	tlstest.WriteFile(t, caFile, ca.PEM)
	store, err := tlsconf.New(tlsconf.Config{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	good := ca.Client(t, "dev-1", tlstest.Options{})
	if leaf, err := store.VerifyClient(good.TLS.Certificate); err != nil || leaf.Subject.CommonName != "dev-1" {
		t.Fatalf("VerifyClient(good) = %v, %v", leaf, err)
	}
	var unknownCA x509.UnknownAuthorityError
	if _, err := store.VerifyClient(tlstest.NewCA(t, "other").Client(t, "dev-1", tlstest.Options{}).TLS.Certificate); !errors.As(err, &unknownCA) {
		t.Fatalf("VerifyClient(other CA) = %v, want x509.UnknownAuthorityError", err)
	}
	var invalid x509.CertificateInvalidError
	if _, err := store.VerifyClient(ca.Client(t, "dev-1", tlstest.Options{Expired: true}).TLS.Certificate); !errors.As(err, &invalid) || invalid.Reason != x509.Expired {
		t.Fatalf("VerifyClient(expired) = %v, want expired", err)
	}
	// A renewed CA bundle applies without restart.
	ca2 := tlstest.NewCA(t, "devices CA 2")
	tlstest.WriteFile(t, caFile, ca2.PEM)
	store.Check()
	if _, err := store.VerifyClient(ca2.Client(t, "dev-1", tlstest.Options{}).TLS.Certificate); err != nil {
		t.Fatalf("VerifyClient(new CA) after reload: %v", err)
	}
	if _, err := store.VerifyClient(good.TLS.Certificate); err == nil {
		t.Fatal("the old CA is still trusted after the bundle was replaced")
	}
}

// BenchmarkHandshake measures full TLS 1.3 handshakes (ECDSA P-256) through a Listener: what a
// reconnect storm costs the hub per device, without and with a client certificate.
func BenchmarkHandshake(b *testing.B) {
	dir := b.TempDir()
	ca := tlstest.NewCA(b, "test CA")
	certFile, keyFile := ca.Server(b, "hub").WriteFiles(b, dir, "server")
	caFile := filepath.Join(dir, "ca.pem")
	tlstest.WriteFile(b, caFile, ca.PEM)
	store, err := tlsconf.New(tlsconf.Config{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile}, nil)
	if err != nil {
		b.Fatal(err)
	}
	client := ca.Client(b, "dev-1", tlstest.Options{})
	for _, bc := range []struct {
		name string
		cert []tls.Certificate
	}{{"server-only", nil}, {"client-cert", []tls.Certificate{client.TLS}}} {
		b.Run(bc.name, func(b *testing.B) {
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			ln := tlsconf.NewListener(inner, store.DeviceConfig(), "bench", 5*time.Second, nil)
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					_ = c.Close()
				}
			}()
			cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", Certificates: bc.cert}
			b.ReportAllocs()
			for b.Loop() {
				c, err := tls.Dial("tcp", inner.Addr().String(), cfg)
				if err != nil {
					b.Fatal(err)
				}
				_ = c.Close()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
		})
	}
}

func TestLogLimiter(t *testing.T) {
	l := tlsconf.NewLogLimiter(time.Hour)
	if ok, n := l.Allow(); !ok || n != 0 {
		t.Fatalf("first line: %v %d, want allowed, 0 held back", ok, n)
	}
	for range 5 {
		if ok, _ := l.Allow(); ok {
			t.Fatal("a second line within the interval was allowed")
		}
	}
	l.Rewind(2 * time.Hour)
	if ok, n := l.Allow(); !ok || n != 5 {
		t.Fatalf("after the interval: %v %d, want allowed with 5 held back", ok, n)
	}
}

// TestClientCAReload: the device listener's client CA pool follows the bundle file.
func TestClientCAReload(t *testing.T) {
	dir := t.TempDir()
	serverCA, oldCA, newCA := tlstest.NewCA(t, "server CA"), tlstest.NewCA(t, "old devices CA"), tlstest.NewCA(t, "new devices CA")
	certFile, keyFile := serverCA.Server(t, "hub").WriteFiles(t, dir, "server")
	caFile := filepath.Join(dir, "ca.pem")
	tlstest.WriteFile(t, caFile, oldCA.PEM)
	store, err := tlsconf.New(tlsconf.Config{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, store.DeviceConfig(), "test-ca-reload")
	// handshake presents cert whatever CAs the server names, and reads the server's verdict.
	handshake := func(cert tlstest.Cert) error {
		cfg := &tls.Config{RootCAs: serverCA.Pool(), ServerName: "localhost",
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert.TLS, nil }}
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = io.ReadAll(c)
		if err == nil && len(c.ConnectionState().PeerCertificates) == 0 {
			return errors.New("no server certificate")
		}
		return err
	}
	oldDev, newDev := oldCA.Client(t, "d1", tlstest.Options{}), newCA.Client(t, "d1", tlstest.Options{})
	if err := handshake(oldDev); err != nil {
		t.Fatalf("device of the configured CA: %v", err)
	}
	if err := handshake(newDev); err == nil || !strings.Contains(err.Error(), "unknown certificate authority") {
		t.Fatalf("device of a CA not yet in the bundle: %v, want unknown certificate authority", err)
	}
	tlstest.WriteFile(t, caFile, newCA.PEM)
	store.Check()
	if err := handshake(newDev); err != nil {
		t.Fatalf("device of the new CA after the bundle changed: %v", err)
	}
	if err := handshake(oldDev); err == nil {
		t.Fatal("device of the removed CA still accepted")
	}
}
