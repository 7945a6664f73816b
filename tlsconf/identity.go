package tlsconf

import (
	"crypto/x509"
	"errors"
	"slices"
)

// Errors of DeviceID.
var (
	// ErrCertMismatch: the client claimed an identity (MQTT username) its certificate does not name.
	ErrCertMismatch = errors.New("the username is not a name in the client certificate")
	// ErrCertUnknownDevice: no name in the certificate is a registered device.
	ErrCertUnknownDevice = errors.New("the client certificate names no registered device")
)

// Names are the names a client certificate vouches for, in the order they are tried: the
// subject's common name, then DNS SANs, then URI SANs.
func Names(cert *x509.Certificate) []string {
	var names []string
	if cert.Subject.CommonName != "" {
		names = append(names, cert.Subject.CommonName)
	}
	names = append(names, cert.DNSNames...)
	for _, u := range cert.URIs {
		names = append(names, u.String())
	}
	return names
}

// DeviceID is the device a verified client certificate authenticates. claimed is the identity
// the client asked for ("" for none): it must be one of the certificate's names. Without a
// claim, the first name that is a registered device wins. known reports registered devices.
func DeviceID(cert *x509.Certificate, claimed string, known func(id string) bool) (string, error) {
	names := Names(cert)
	if claimed != "" {
		if !slices.Contains(names, claimed) {
			return "", ErrCertMismatch
		}
		names = []string{claimed}
	}
	for _, n := range names {
		if known(n) {
			return n, nil
		}
	}
	return "", ErrCertUnknownDevice
}
