package mqtt

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tributary-iot/tributary/protocols"
)

// Config of the MQTT adapter. The zero value works: every field has a documented default.
type Config struct {
	// Addr is the MQTT 3.1.1 and 5 TCP listener (default ":1883"). Port 0 picks a free port;
	// Server.Addr reports the one chosen.
	Addr string `yaml:"mqtt_addr" json:"mqtt_addr"`
	// WSAddr is the MQTT-over-WebSocket listener ("" = off). Any path is served, with
	// subprotocol "mqtt"; any Origin is accepted (clients authenticate with MQTT credentials).
	WSAddr string `yaml:"mqtt_ws_addr" json:"mqtt_ws_addr"`
	// TLSAddr is the MQTT over TLS listener ("" = off), served only when TLSConfig is set.
	TLSAddr string `yaml:"mqtts_addr" json:"mqtts_addr"`
	// WSSAddr is the MQTT over secure WebSocket listener ("" = off), served only when TLSConfig
	// is set.
	WSSAddr string `yaml:"mqtt_wss_addr" json:"mqtt_wss_addr"`
	// TLSConfig serves TLSAddr and WSSAddr (see tlsconf.Store.DeviceConfig). When it asks for
	// client certificates, a device presenting a verified one is authenticated as the device
	// the certificate names, without a token (the Authenticator must implement DeviceExists).
	TLSConfig *tls.Config `yaml:"-" json:"-"`

	// MaxPacketSize is the largest MQTT packet the broker reads, in bytes; a larger one closes the
	// connection. It is advertised to MQTT 5 clients in the CONNACK. Default: the ingest payload
	// limit plus 64 KiB, so a payload between the two limits still gets the pipeline's own "too
	// large" answer (MQTT 5 reason 0x95) and a dead letter rather than a dropped connection.
	MaxPacketSize int `yaml:"mqtt_max_packet_size" json:"mqtt_max_packet_size"`
	// MaxClients bounds concurrent connections (default 0: unlimited). Beyond it a CONNACK
	// "server unavailable" (v3) / "server busy" (v5) is sent.
	MaxClients int `yaml:"mqtt_max_clients" json:"mqtt_max_clients"`
	// MaxInflight bounds QoS 1/2 messages awaiting a subscriber's acknowledgement, including
	// those queued for a disconnected persistent session (default 1024). Beyond it messages to
	// that subscriber are dropped and counted.
	MaxInflight int `yaml:"mqtt_max_inflight" json:"mqtt_max_inflight"`
	// MaxPendingWrites bounds messages queued for writing to one connection (default 1024).
	// A subscriber that reads slower than messages arrive loses messages beyond it (counted in
	// tributary_mqtt_dropped_total) rather than slowing down everyone else.
	MaxPendingWrites int `yaml:"mqtt_max_pending_writes" json:"mqtt_max_pending_writes"`
	// SessionExpiry is the longest a disconnected persistent session (v3 clean session false,
	// v5 session expiry > 0) is kept, with its subscriptions and queued QoS 1 messages
	// (default 24h; sessions live in the broker's memory only).
	SessionExpiry time.Duration `yaml:"mqtt_session_expiry" json:"mqtt_session_expiry"`
	// Timeout bounds each credential check and each JetStream store made for a client
	// (default 5s). A QoS 1 publish not stored within it gets no PUBACK.
	Timeout time.Duration `yaml:"mqtt_timeout" json:"mqtt_timeout"`
	// ConnectTimeout is how long a new connection may take to send its CONNECT (default 10s).
	ConnectTimeout time.Duration `yaml:"mqtt_connect_timeout" json:"mqtt_connect_timeout"`
	// RetainedRestore is how many of the newest desired-state messages Run reads back from the
	// stream at start, so devices get their retained desired state after a hub restart too
	// (default 10000; -1 turns it off).
	RetainedRestore int `yaml:"mqtt_retained_restore" json:"mqtt_retained_restore"`
}

// Defaults.
const (
	DefaultAddr             = ":1883"
	DefaultMaxInflight      = 1024
	DefaultMaxPendingWrites = 1024
	DefaultSessionExpiry    = 24 * time.Hour
	DefaultTimeout          = 5 * time.Second
	DefaultConnectTimeout   = 10 * time.Second
	DefaultRetainedRestore  = 10000

	// packetOverhead is what MaxPacketSize allows above the payload limit by default: fixed
	// header, topic, properties.
	packetOverhead = 64 << 10
	// maxMQTTPacket is the largest packet MQTT can express (remaining length 268,435,455).
	maxMQTTPacket = 268435455
	// maxSessionExpiry is the largest MQTT 5 session expiry interval (a uint32 of seconds).
	maxSessionExpiry = (1<<32 - 1) * time.Second
)

// setDefaults fills in unset fields; maxPayload is the ingest pipeline's payload limit.
func (c *Config) setDefaults(maxPayload int) {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.MaxPacketSize == 0 {
		if maxPayload <= 0 {
			maxPayload = protocols.DefaultMaxPayload
		}
		c.MaxPacketSize = min(maxPayload+packetOverhead, maxMQTTPacket)
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = DefaultMaxInflight
	}
	if c.MaxPendingWrites == 0 {
		c.MaxPendingWrites = DefaultMaxPendingWrites
	}
	if c.SessionExpiry == 0 {
		c.SessionExpiry = DefaultSessionExpiry
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.RetainedRestore == 0 {
		c.RetainedRestore = DefaultRetainedRestore
	}
}

// Validate reports the first field that is wrong. Zero values are valid (they mean the default).
func (c Config) Validate() error {
	switch {
	case c.WSAddr != "" && c.WSAddr == c.Addr && !strings.HasSuffix(c.Addr, ":0"):
		return fmt.Errorf("mqtt: mqtt_ws_addr %q must differ from mqtt_addr", c.WSAddr)
	case c.TLSConfig != nil && c.TLSAddr != "" && (c.TLSAddr == c.Addr || c.TLSAddr == c.WSAddr) && !strings.HasSuffix(c.TLSAddr, ":0"):
		return fmt.Errorf("mqtt: mqtts_addr %q must differ from mqtt_addr and mqtt_ws_addr", c.TLSAddr)
	case c.TLSConfig != nil && c.WSSAddr != "" && (c.WSSAddr == c.Addr || c.WSSAddr == c.WSAddr || c.WSSAddr == c.TLSAddr) && !strings.HasSuffix(c.WSSAddr, ":0"):
		return fmt.Errorf("mqtt: mqtt_wss_addr %q must differ from the other MQTT listeners", c.WSSAddr)
	case c.MaxPacketSize != 0 && (c.MaxPacketSize < 1024 || c.MaxPacketSize > maxMQTTPacket):
		return fmt.Errorf("mqtt: mqtt_max_packet_size %d out of range 1024..%d", c.MaxPacketSize, maxMQTTPacket)
	case c.MaxClients < 0:
		return errors.New("mqtt: mqtt_max_clients must not be negative")
	case c.MaxInflight < 0 || c.MaxInflight > 65535:
		return fmt.Errorf("mqtt: mqtt_max_inflight %d out of range 1..65535", c.MaxInflight)
	case c.MaxPendingWrites < 0 || c.MaxPendingWrites > 1<<20:
		return fmt.Errorf("mqtt: mqtt_max_pending_writes %d out of range 1..%d", c.MaxPendingWrites, 1<<20)
	case c.SessionExpiry < 0 || c.SessionExpiry > maxSessionExpiry:
		return fmt.Errorf("mqtt: mqtt_session_expiry %v out of range 1s..%v", c.SessionExpiry, maxSessionExpiry)
	case c.Timeout < 0:
		return errors.New("mqtt: mqtt_timeout must not be negative")
	case c.ConnectTimeout < 0:
		return errors.New("mqtt: mqtt_connect_timeout must not be negative")
	case c.RetainedRestore < -1:
		return fmt.Errorf("mqtt: mqtt_retained_restore %d: use -1 to turn it off", c.RetainedRestore)
	}
	return nil
}
