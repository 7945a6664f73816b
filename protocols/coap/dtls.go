package coap

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"

	piondtls "github.com/pion/dtls/v3"
	"github.com/pion/logging"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	coapnet "github.com/plgd-dev/go-coap/v3/net"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/protocols"
)

// PSKFromToken is the DTLS pre-shared key of a device whose token is token: the hex SHA-256 of
// the token, as 64 ASCII bytes. (The hub keeps only that hash, so it is what both sides can
// know.) The PSK identity is the device ID.
func PSKFromToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return []byte(hex.EncodeToString(sum[:]))
}

// dtlsIdentity is who a DTLS session authenticated as, with the key it used.
type dtlsIdentity struct {
	name  string // PSK identity: a device ID or "app"; or the device a client certificate names
	psk   []byte // the key at the first request (nil before)
	cert  bool   // authenticated by a client certificate, not a PSK
	ident protocols.Identity
}

// dtlsCipherSuites are pion's PSK suites; TLS_PSK_WITH_AES_128_CCM_8 is the one RFC 7252
// §9.1.3.1 makes mandatory for CoAP.
var dtlsCipherSuites = []piondtls.CipherSuiteID{
	piondtls.TLS_PSK_WITH_AES_128_CCM_8,
	piondtls.TLS_PSK_WITH_AES_128_CCM,
	piondtls.TLS_PSK_WITH_AES_128_GCM_SHA256,
	piondtls.TLS_PSK_WITH_AES_256_CCM_8,
	piondtls.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256,
	piondtls.TLS_PSK_WITH_AES_128_CBC_SHA256,
}

func (s *Server) dtlsOptions(ctx context.Context) coapnet.DTLSServerOptions {
	suites := dtlsCipherSuites
	if s.cfg.Certs != nil {
		suites = append(slices.Clone(dtlsCipherSuites), certCipherSuites...)
	}
	opts := []piondtls.ServerOption{
		piondtls.WithPSK(func(identity []byte) ([]byte, error) { return s.pskFor(ctx, string(identity)) }),
		piondtls.WithCipherSuites(suites...),
		piondtls.WithLoggerFactory(loggerFactory{s.log}),
		piondtls.WithOnConnectionAttempt(s.onConnectionAttempt),
	}
	return coapnet.NewDTLSServerOptions(append(opts, s.certOptions(ctx)...)...)
}

// pskFor is the handshake's PSK callback. An unknown identity fails the handshake and is
// dead-lettered; a wrong key fails it later, when the peer's Finished message does not verify.
func (s *Server) pskFor(ctx context.Context, identity string) ([]byte, error) {
	if psk, ok := s.lookupPSK(identity); ok {
		return psk, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
	defer cancel()
	s.refuse(ctx, identity, "", "DTLS: unknown PSK identity")
	return nil, fmt.Errorf("unknown PSK identity %q", identity)
}

func (s *Server) lookupPSK(identity string) ([]byte, bool) {
	if identity == protocols.AppUsername {
		k := s.psk.AppPSK()
		return k, len(k) > 0
	}
	if !devices.ValidID(identity) {
		return nil, false
	}
	return s.psk.DevicePSK(identity)
}

// dtlsIdentity returns who a DTLS peer is. The identity is read from the session on its first
// request; on every request the key is checked to be still current, so a rotated token or a
// deleted device stops working at once (the peer must handshake again).
func (s *Server) dtlsIdentity(ctx context.Context, cs *connState, req request) (protocols.Identity, *failure) {
	id, f := s.sessionIdentity(cs)
	if f != nil {
		return protocols.Identity{}, f
	}
	if id.cert {
		// As a rotated token ends a PSK session, a deleted device ends a certificate session.
		if !s.certDeviceExists(id.name) {
			return protocols.Identity{}, s.refuse(ctx, id.name, req.Topic, "DTLS: the certificate's device is no longer registered")
		}
		s.seen(id.name, cs)
		return id.ident, nil
	}
	psk, ok := s.lookupPSK(id.name)
	if id.psk == nil {
		if !ok {
			return protocols.Identity{}, s.refuse(ctx, id.name, req.Topic, "DTLS: unknown PSK identity")
		}
		id.psk = psk
		if !id.ident.App {
			s.auditDevice(ctx, id.name)
		}
	}
	if !ok || subtle.ConstantTimeCompare(psk, id.psk) != 1 {
		return protocols.Identity{}, s.refuse(ctx, id.name, req.Topic, "DTLS: the key changed since the handshake; connect again")
	}
	if !id.ident.App {
		s.seen(id.name, cs)
	}
	return id.ident, nil
}

// sessionIdentity reads the PSK identity of a DTLS session once.
func (s *Server) sessionIdentity(cs *connState) (*dtlsIdentity, *failure) {
	if cs.ident != nil {
		return cs.ident, nil
	}
	dc, ok := cs.cc.NetConn().(*piondtls.Conn)
	if !ok {
		return nil, fail(codes.InternalServerError, "not a DTLS connection")
	}
	st, ok := dc.ConnectionState()
	if !ok {
		return nil, fail(codes.InternalServerError, "DTLS session state unavailable")
	}
	id := &dtlsIdentity{name: string(st.IdentityHint)}
	if len(st.PeerCertificates) > 0 {
		name, err := s.certDevice(st.PeerCertificates)
		if err != nil {
			return nil, fail(codes.Unauthorized, "%s", err)
		}
		id = &dtlsIdentity{name: name, cert: true}
	}
	if id.name == protocols.AppUsername && !id.cert {
		id.ident = protocols.Identity{App: true}
	} else {
		id.ident = protocols.Identity{DeviceID: id.name}
	}
	cs.ident = id
	return id, nil
}

// loggerFactory sends pion/dtls logs to slog, at debug level: what pion reports is about
// peers (failed handshakes, bad records), not the hub.
type loggerFactory struct{ log *slog.Logger }

func (f loggerFactory) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{f.log.With("scope", "dtls/"+scope)}
}

type pionLogger struct{ log *slog.Logger }

func (l pionLogger) logf(level string, format string, args ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug(fmt.Sprintf(format, args...), "pion_level", level)
	}
}

func (l pionLogger) Trace(string)                      {}
func (l pionLogger) Tracef(string, ...any)             {}
func (l pionLogger) Debug(msg string)                  { l.logf("debug", "%s", msg) }
func (l pionLogger) Debugf(format string, args ...any) { l.logf("debug", format, args...) }
func (l pionLogger) Info(msg string)                   { l.logf("info", "%s", msg) }
func (l pionLogger) Infof(format string, args ...any)  { l.logf("info", format, args...) }
func (l pionLogger) Warn(msg string)                   { l.logf("warn", "%s", msg) }
func (l pionLogger) Warnf(format string, args ...any)  { l.logf("warn", format, args...) }
func (l pionLogger) Error(msg string)                  { l.logf("error", "%s", msg) }
func (l pionLogger) Errorf(format string, args ...any) { l.logf("error", format, args...) }
