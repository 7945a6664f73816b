package mqtt

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"

	mochi "github.com/mochi-mqtt/server/v2"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/protocols"
	"github.com/tributary-iot/tributary/tlsconf"
)

// deviceDirectory is optionally implemented by the Authenticator: it lets a device log in with
// a TLS client certificate instead of a token.
type deviceDirectory interface {
	// DeviceExists reports whether id is a registered device.
	DeviceExists(id string) bool
}

// peerCert is the verified client certificate of a TLS connection, nil when there is none
// (plain TCP, or TLS without a client certificate).
func peerCert(c net.Conn) *x509.Certificate {
	tc, ok := c.(interface{ ConnectionState() tls.ConnectionState })
	if !ok {
		return nil
	}
	st := tc.ConnectionState()
	// VerifiedChains is set only when the handshake checked the certificate against the
	// client CA pool; PeerCertificates alone would trust any self-signed certificate.
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return nil
	}
	return st.PeerCertificates[0]
}

// certDevice is the device a client's certificate authenticates, "" when the client has no
// certificate or logs in as an application or for provisioning (those use their keys). The
// username must be empty or one of the certificate's names; a certificate naming no registered
// device is refused like a wrong token.
func (s *Server) certDevice(cl *mochi.Client, user string) (string, error) {
	if cl.Net.Conn == nil || user == protocols.AppUsername || user == devices.ProvisionID {
		return "", nil
	}
	cert := peerCert(cl.Net.Conn)
	if cert == nil {
		return "", nil
	}
	dir, ok := s.auth.(deviceDirectory)
	if !ok {
		return "", errors.New("client certificates are not supported by this hub's authenticator")
	}
	id, err := tlsconf.DeviceID(cert, user, func(id string) bool { return devices.ValidID(id) && dir.DeviceExists(id) })
	if errors.Is(err, tlsconf.ErrCertUnknownDevice) {
		return "", errors.New("unknown device or wrong token") // as for a token: never which
	}
	return id, err
}
