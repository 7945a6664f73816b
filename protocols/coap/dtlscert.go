package coap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	piondtls "github.com/pion/dtls/v3"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/tlsconf"
)

// CertSource is the server certificate and client CA pool, re-read when their files change;
// *tlsconf.Store satisfies it.
type CertSource interface {
	// Certificate is the server certificate to present.
	Certificate() *tls.Certificate
	// ClientCAs is the pool that signs device certificates; nil: none are asked for.
	ClientCAs() *x509.CertPool
	// VerifyClient checks a client's chain against the current pool and returns its leaf.
	VerifyClient(rawCerts [][]byte) (*x509.Certificate, error)
}

// deviceDirectory is optionally implemented by the Authenticator: it lets devices authenticate
// with client certificates (the hub's does, from the registry).
type deviceDirectory interface {
	DeviceExists(id string) bool
}

// certCipherSuites are the certificate suites offered next to the PSK ones when Config.Certs
// is set; TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 is the one RFC 7252 §9.1.3.3 makes mandatory.
// Which family a handshake uses is the client's choice: a PSK client offers only PSK suites.
var certCipherSuites = []piondtls.CipherSuiteID{
	piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8,
	piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM,
	piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	piondtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	piondtls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	piondtls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
}

// certOptions are the DTLS options for certificates: the server certificate, taken from
// Config.Certs at every handshake (so a renewed one is used at once), and, with a client CA
// and a registry to look devices up in, client certificates. Those are asked for but not
// required (PSK clients have none), and checked by verifyDeviceCert rather than by pion, so
// that a renewed CA bundle applies too.
func (s *Server) certOptions(ctx context.Context) []piondtls.ServerOption {
	certs := s.cfg.Certs
	if certs == nil {
		return nil
	}
	opts := []piondtls.ServerOption{
		piondtls.WithGetCertificate(func(*piondtls.ClientHelloInfo) (*tls.Certificate, error) { return certs.Certificate(), nil }),
	}
	if _, ok := s.auth.(deviceDirectory); ok && certs.ClientCAs() != nil {
		opts = append(opts,
			piondtls.WithClientAuth(piondtls.RequestClientCert),
			piondtls.WithVerifyPeerCertificate(func(raw [][]byte, _ [][]*x509.Certificate) error {
				return s.verifyDeviceCert(ctx, raw)
			}),
		)
	}
	return opts
}

// verifyDeviceCert runs in the handshake (pion has already checked that the client holds the
// certificate's key): the chain must verify against the client CA pool and name a registered
// device, else the handshake fails, as for an unknown PSK identity, and is dead-lettered.
func (s *Server) verifyDeviceCert(ctx context.Context, raw [][]byte) error {
	if len(raw) == 0 {
		return nil // no certificate: a PSK session
	}
	_, err := s.certDevice(raw)
	if err != nil {
		ctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
		defer cancel()
		s.in.DeadLetterAuth(ctx, protocolName, "", "", "coap: DTLS: "+err.Error())
	}
	return err
}

// certDevice is the device a client certificate chain authenticates.
func (s *Server) certDevice(raw [][]byte) (string, error) {
	if s.cfg.Certs == nil {
		return "", errors.New("client certificates are not accepted")
	}
	leaf, err := s.cfg.Certs.VerifyClient(raw)
	if err != nil {
		return "", fmt.Errorf("client certificate refused: %w", err)
	}
	id, err := tlsconf.DeviceID(leaf, "", s.certDeviceExists)
	if err != nil {
		return "", fmt.Errorf("client certificate refused: %w", err)
	}
	return id, nil
}

func (s *Server) certDeviceExists(id string) bool {
	dir, ok := s.auth.(deviceDirectory)
	return ok && devices.ValidID(id) && dir.DeviceExists(id)
}
