// Package tlsconf serves TLS from PEM files that may be replaced while the hub runs. A Store
// re-reads the certificate, key and client CA bundle when their size or modification time
// changes, keeps the last good set when the new files are invalid, and hands out tls.Config
// values that always use the current set. Listener wraps a TCP listener so that handshakes
// happen before Accept returns, which is where failed handshakes are counted and logged.
package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Config names the PEM files. CertFile and KeyFile are both set or both empty (TLS off).
type Config struct {
	// CertFile is the server certificate chain, leaf first.
	CertFile string `yaml:"tls_cert" json:"tls_cert"`
	// KeyFile is the private key of the leaf certificate.
	KeyFile string `yaml:"tls_key" json:"tls_key"`
	// ClientCAFile is a bundle of CA certificates that sign device client certificates ("":
	// client certificates are not asked for).
	ClientCAFile string `yaml:"tls_client_ca" json:"tls_client_ca"`
	// ReloadInterval is how often the files are checked for changes (default 2s).
	ReloadInterval time.Duration `yaml:"tls_reload_interval" json:"tls_reload_interval"`
}

// DefaultReloadInterval is how often Run checks the files by default: two stat calls per file,
// cheap enough to notice a renewed certificate within seconds.
const DefaultReloadInterval = 2 * time.Second

// Enabled reports whether TLS is configured.
func (c Config) Enabled() bool { return c.CertFile != "" || c.KeyFile != "" }

// Validate names the first setting that is wrong.
func (c Config) Validate() error {
	switch {
	case c.CertFile != "" && c.KeyFile == "":
		return errors.New("tls-key: must be set with tls-cert")
	case c.KeyFile != "" && c.CertFile == "":
		return errors.New("tls-cert: must be set with tls-key")
	case c.ClientCAFile != "" && c.CertFile == "":
		return errors.New("tls-client-ca: needs tls-cert and tls-key (client certificates are only asked for over TLS)")
	case c.ReloadInterval < 0:
		return errors.New("tls-reload-interval: must not be negative")
	}
	return nil
}

var (
	metricReloads = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_tls_reloads_total",
		Help: "Reloads of the TLS certificate files after they changed, by result (ok, failed: the previous certificate stays in use).",
	}, []string{"result"})
	metricReloadFailures = metricReloads.WithLabelValues("failed")
	metricNotAfter       = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "tributary_tls_cert_not_after_seconds",
		Help: "Expiry (Unix time) of the server certificate in use.",
	})
	metricHandshakeFailures = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "tributary_tls_handshake_failures_total",
		Help: "TLS and DTLS handshakes that failed (bad or missing client certificate, plain TCP on a TLS port, timeouts), by listener.",
	}, []string{"listener"})
)

// Store holds the current certificate and client CA pool.
type Store struct {
	cfg Config
	log *slog.Logger
	cur atomic.Pointer[state]
	// tried are the stamps of the files last loaded or last failed to load, so a broken file is
	// reported once, not at every check.
	mu      sync.Mutex
	tried   [3]stamp
	lastErr atomic.Pointer[string] // the last failed reload's error, nil after a good one
}

// Status is the certificate in use and the state of reloading, for /readyz.
type Status struct {
	Subject  string    `json:"subject"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
	// ReloadError is why the files could not be loaded the last time they changed ("" when
	// the last change loaded).
	ReloadError string `json:"reload_error,omitempty"`
}

// state is one loaded set of files with the tls.Configs built from it.
type state struct {
	cert   *tls.Certificate
	pool   *x509.CertPool // nil without a client CA file
	server *tls.Config    // no client certificates
	mutual *tls.Config    // client certificates verified if given (= server without a CA)
}

// stamp identifies a version of a file; the zero stamp is "missing".
type stamp struct {
	size int64
	mod  int64 // Unix nanoseconds
}

// New loads the files; an error names the one that is wrong.
func New(cfg Config, log *slog.Logger) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		return nil, errors.New("tls: no certificate configured")
	}
	if cfg.ReloadInterval == 0 {
		cfg.ReloadInterval = DefaultReloadInterval
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{cfg: cfg, log: log.With("component", "tls")}
	s.tried = s.stamps()
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	s.install(st)
	return s, nil
}

func (s *Store) files() [3]string {
	return [3]string{s.cfg.CertFile, s.cfg.KeyFile, s.cfg.ClientCAFile}
}

func (s *Store) stamps() [3]stamp {
	var out [3]stamp
	for i, f := range s.files() {
		if f == "" {
			continue
		}
		if fi, err := os.Stat(f); err == nil { // follows symlinks: a swapped Kubernetes secret shows
			out[i] = stamp{size: fi.Size(), mod: fi.ModTime().UnixNano()}
		}
	}
	return out
}

// load reads and checks every file.
func (s *Store) load() (*state, error) {
	cert, err := tls.LoadX509KeyPair(s.cfg.CertFile, s.cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls-cert %s / tls-key %s: %w", s.cfg.CertFile, s.cfg.KeyFile, err)
	}
	// cert.Leaf is filled in by LoadX509KeyPair since Go 1.23.
	st := &state{cert: &cert}
	if s.cfg.ClientCAFile != "" {
		data, err := os.ReadFile(s.cfg.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls-client-ca: %w", err)
		}
		st.pool = x509.NewCertPool()
		if !st.pool.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("tls-client-ca %s: no PEM certificate in it", s.cfg.ClientCAFile)
		}
	}
	// HTTP/1.1 only: the API's WebSocket streams and MQTT over WebSocket upgrade HTTP/1.1
	// connections.
	st.server = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"http/1.1"},
	}
	st.mutual = st.server
	if st.pool != nil {
		st.mutual = st.server.Clone()
		st.mutual.ClientCAs = st.pool
		// Optional: devices without a certificate still log in with their token.
		st.mutual.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return st, nil
}

func (s *Store) install(st *state) {
	s.cur.Store(st)
	if leaf := st.cert.Leaf; leaf != nil {
		metricNotAfter.Set(float64(leaf.NotAfter.Unix()))
		if time.Now().After(leaf.NotAfter) {
			s.log.Warn("the server certificate has expired", "file", s.cfg.CertFile, "not_after", leaf.NotAfter)
		}
	}
}

// Check reloads the files if any changed since the last attempt. A failed load keeps the
// previous set, is logged as an error and counted; it is tried again when the files change.
func (s *Store) Check() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.stamps()
	if now == s.tried {
		return
	}
	s.tried = now
	st, err := s.load()
	if err != nil {
		metricReloadFailures.Inc()
		msg := err.Error()
		s.lastErr.Store(&msg)
		s.log.Error("TLS files changed but cannot be loaded; still using the previous certificate", "err", err)
		return
	}
	s.install(st)
	s.lastErr.Store(nil)
	metricReloads.WithLabelValues("ok").Inc()
	attrs := []any{"cert", s.cfg.CertFile}
	if leaf := st.cert.Leaf; leaf != nil {
		attrs = append(attrs, "subject", leaf.Subject.String(), "serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter)
	}
	s.log.Info("TLS certificate reloaded", attrs...)
}

// Status reports the certificate in use and the last reload error.
func (s *Store) Status() Status {
	var st Status
	if leaf := s.cur.Load().cert.Leaf; leaf != nil {
		st.Subject, st.Serial, st.NotAfter = leaf.Subject.String(), leaf.SerialNumber.String(), leaf.NotAfter
	}
	if e := s.lastErr.Load(); e != nil {
		st.ReloadError = *e
	}
	return st
}

// Certificate is the server certificate in use.
func (s *Store) Certificate() *tls.Certificate { return s.cur.Load().cert }

// ClientCAs is the client CA pool in use (nil without tls-client-ca).
func (s *Store) ClientCAs() *x509.CertPool { return s.cur.Load().pool }

// ServerConfig is a tls.Config for listeners that do not ask for client certificates (HTTPS).
// Every handshake uses the current certificate.
func (s *Store) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.cur.Load().server, nil
		},
	}
}

// DeviceConfig is a tls.Config for device listeners: with tls-client-ca, a client certificate
// is asked for and, when one is sent, it must be signed by that CA and valid (the handshake
// fails otherwise); without one the client authenticates with a token as over plain TCP.
func (s *Store) DeviceConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.cur.Load().mutual, nil
		},
	}
}

// VerifyClient checks a client certificate chain against the current client CA pool, for
// listeners that cannot swap their pool per handshake (DTLS). It returns the leaf.
func (s *Store) VerifyClient(rawCerts [][]byte) (*x509.Certificate, error) {
	pool := s.ClientCAs()
	if pool == nil {
		return nil, errors.New("client certificates are not accepted (no tls-client-ca)")
	}
	if len(rawCerts) == 0 {
		return nil, errors.New("no client certificate")
	}
	certs := make([]*x509.Certificate, len(rawCerts))
	for i, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// Run checks the files every ReloadInterval until ctx ends.
func (s *Store) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.Check()
		}
	}
}
