package coap

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// Config of the CoAP adapter. The zero value of every field but Addr means its default.
type Config struct {
	// Addr is the UDP listen address, e.g. ":5683"; port 0 picks a free port.
	Addr string `yaml:"coap_addr" json:"coap_addr"`
	// DTLSAddr is the DTLS (pre-shared key) listen address, e.g. ":5684"; "" turns DTLS off.
	DTLSAddr string `yaml:"coaps_addr" json:"coaps_addr"`
	// Certs adds certificate-based DTLS to DTLSAddr, next to the pre-shared keys: the server
	// presents Certs' certificate, and with a client CA devices may authenticate with client
	// certificates (CN or SAN = device ID). nil: PSK only.
	Certs CertSource `yaml:"-" json:"-"`
	// InactivityTimeout is how long a silent peer's state is kept (default 5m). A peer with
	// observers is pinged instead, and forgotten only when two pings in a row go unanswered.
	InactivityTimeout time.Duration `yaml:"coap_inactivity_timeout" json:"coap_inactivity_timeout"`
	// MaxObservers caps observations over all peers (default 10000). Beyond it, and beyond
	// MaxObserversPerPeer, a GET with Observe is answered as a plain GET (RFC 7641 §4.1).
	MaxObservers int `yaml:"coap_max_observers" json:"coap_max_observers"`
	// MaxObserversPerPeer caps observations of one peer (default 64).
	MaxObserversPerPeer int `yaml:"coap_max_observers_per_peer" json:"coap_max_observers_per_peer"`
	// NotifyQueue is how many notifications may wait for one observer (default 64). When it is
	// full the oldest waiting notification is dropped and counted.
	NotifyQueue int `yaml:"coap_notify_queue" json:"coap_notify_queue"`
	// NotifyTimeout is how long a confirmable notification may go unacknowledged, retransmissions
	// included, before the observer is dropped (default 60s; CoAP's MAX_TRANSMIT_WAIT is 93s).
	NotifyTimeout time.Duration `yaml:"coap_notify_timeout" json:"coap_notify_timeout"`
	// RequestQueue is how many requests of one peer may wait to be handled (default 32). Beyond
	// it requests are dropped; confirmable ones are retransmitted by the peer.
	RequestQueue int `yaml:"coap_request_queue" json:"coap_request_queue"`
	// StoreTimeout bounds how long a request waits for JetStream (default 10s); past it the
	// answer is 5.03.
	StoreTimeout time.Duration `yaml:"coap_store_timeout" json:"coap_store_timeout"`
}

// Defaults.
const (
	DefaultInactivityTimeout   = 5 * time.Minute
	DefaultMaxObservers        = 10000
	DefaultMaxObserversPerPeer = 64
	DefaultNotifyQueue         = 64
	DefaultNotifyTimeout       = 60 * time.Second
	DefaultRequestQueue        = 32
	DefaultStoreTimeout        = 10 * time.Second
)

func (c *Config) setDefaults() {
	if c.InactivityTimeout == 0 {
		c.InactivityTimeout = DefaultInactivityTimeout
	}
	if c.MaxObservers == 0 {
		c.MaxObservers = DefaultMaxObservers
	}
	if c.MaxObserversPerPeer == 0 {
		c.MaxObserversPerPeer = DefaultMaxObserversPerPeer
	}
	if c.NotifyQueue == 0 {
		c.NotifyQueue = DefaultNotifyQueue
	}
	if c.NotifyTimeout == 0 {
		c.NotifyTimeout = DefaultNotifyTimeout
	}
	if c.RequestQueue == 0 {
		c.RequestQueue = DefaultRequestQueue
	}
	if c.StoreTimeout == 0 {
		c.StoreTimeout = DefaultStoreTimeout
	}
}

// Validate reports the first field that is wrong. Zero values are valid (they mean the
// default), except for Addr.
func (c Config) Validate() error {
	if c.Addr == "" {
		return errors.New("coap: coap_addr is required")
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("coap: coap_addr %q: %v", c.Addr, err)
	}
	if c.DTLSAddr != "" {
		if _, _, err := net.SplitHostPort(c.DTLSAddr); err != nil {
			return fmt.Errorf("coap: coaps_addr %q: %v", c.DTLSAddr, err)
		}
	}
	switch {
	case c.InactivityTimeout < 0:
		return errors.New("coap: coap_inactivity_timeout must not be negative")
	case c.InactivityTimeout > 0 && c.InactivityTimeout < time.Second:
		return fmt.Errorf("coap: coap_inactivity_timeout %v is shorter than 1s", c.InactivityTimeout)
	case c.MaxObservers < 0:
		return errors.New("coap: coap_max_observers must not be negative")
	case c.MaxObserversPerPeer < 0:
		return errors.New("coap: coap_max_observers_per_peer must not be negative")
	case c.NotifyQueue < 0:
		return errors.New("coap: coap_notify_queue must not be negative")
	case c.NotifyTimeout < 0:
		return errors.New("coap: coap_notify_timeout must not be negative")
	case c.RequestQueue < 0:
		return errors.New("coap: coap_request_queue must not be negative")
	case c.StoreTimeout < 0:
		return errors.New("coap: coap_store_timeout must not be negative")
	}
	return nil
}
