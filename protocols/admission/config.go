package admission

import (
	"errors"
	"fmt"
	"time"

	"github.com/tributary-iot/tributary/devices"
)

// Config of admission control. The zero value admits everything except repeated failed
// authentication (throttled by default) and the default topic depth and subscription counts.
type Config struct {
	// Device are the limits of every device unless its type or the device sets its own
	// (--device-rate, --device-burst, --device-bytes-rate, --device-bytes-burst,
	// --device-max-connections).
	Device devices.Limits `yaml:"device" json:"device"`
	// Tenant are the limits of each tenant: the sum over its devices (--tenant-rate, ...).
	Tenant devices.Limits `yaml:"tenant" json:"tenant"`
	// MaxConnections bounds MQTT connections to this hub instance (0: unlimited).
	MaxConnections int `yaml:"max_connections" json:"max_connections"`
	// MaxDelay is how long a QoS 1/2 message over its rate may wait for its PUBACK
	// (back-pressure) before the client is disconnected instead (default 1s).
	MaxDelay time.Duration `yaml:"max_delay" json:"max_delay"`
	// MaxPayload is the hub's payload limit: default byte bursts are never smaller, so that
	// any acceptable message can pass a byte limit.
	MaxPayload int `yaml:"-" json:"-"`

	// AuthMaxFailures is how many failed authentications from one source address within
	// AuthWindow make further attempts from it refused, without checking their credentials,
	// until AuthWindow has passed (default 10; -1 turns throttling off).
	AuthMaxFailures int `yaml:"auth_max_failures" json:"auth_max_failures"`
	// AuthWindow (default 1m).
	AuthWindow time.Duration `yaml:"auth_window" json:"auth_window"`

	// MaxTopicLevels bounds the levels of a topic or filter (default 16).
	MaxTopicLevels int `yaml:"max_topic_levels" json:"max_topic_levels"`
	// MaxSubscriptions bounds the subscriptions of one MQTT client (default 100).
	MaxSubscriptions int `yaml:"max_subscriptions" json:"max_subscriptions"`

	// APIRate is the request rate of each API key (or, without one, each source address)
	// over the HTTP API (0: unlimited); APIBurst its burst (default: one second's worth).
	APIRate  Rate `yaml:"api_rate" json:"api_rate"`
	APIBurst int  `yaml:"api_burst" json:"api_burst"`
}

// Defaults.
const (
	DefaultMaxDelay         = time.Second
	DefaultAuthMaxFailures  = 10
	DefaultAuthWindow       = time.Minute
	DefaultMaxTopicLevels   = 16
	DefaultMaxSubscriptions = 100
	// DefaultTenant is the tenant of devices that name none.
	DefaultTenant = "default"
	// refreshEvery is how often a device's limits and tenant are looked up again.
	refreshEvery = time.Second
)

func (c *Config) setDefaults() {
	if c.MaxDelay == 0 {
		c.MaxDelay = DefaultMaxDelay
	}
	if c.AuthMaxFailures == 0 {
		c.AuthMaxFailures = DefaultAuthMaxFailures
	}
	if c.AuthWindow == 0 {
		c.AuthWindow = DefaultAuthWindow
	}
	if c.MaxTopicLevels == 0 {
		c.MaxTopicLevels = DefaultMaxTopicLevels
	}
	if c.MaxSubscriptions == 0 {
		c.MaxSubscriptions = DefaultMaxSubscriptions
	}
}

// Validate names the first setting that is wrong.
func (c Config) Validate() error {
	if err := c.Device.Validate(); err != nil {
		return fmt.Errorf("device limits: %w", err)
	}
	if err := c.Tenant.Validate(); err != nil {
		return fmt.Errorf("tenant limits: %w", err)
	}
	switch {
	case c.MaxConnections < 0:
		return errors.New("max-connections: must not be negative")
	case c.MaxDelay < 0 || c.MaxDelay > time.Minute:
		return fmt.Errorf("admission-max-delay: %v out of range 0..1m", c.MaxDelay)
	case c.AuthMaxFailures < -1:
		return fmt.Errorf("auth-max-failures: %d: want a count, or -1 for off", c.AuthMaxFailures)
	case c.AuthWindow < 0:
		return errors.New("auth-failure-window: must not be negative")
	case c.MaxTopicLevels < 0 || c.MaxTopicLevels > 1000:
		return fmt.Errorf("max-topic-levels: %d out of range 1..1000", c.MaxTopicLevels)
	case c.MaxSubscriptions < 0:
		return errors.New("max-subscriptions: must not be negative")
	case c.APIBurst < 0:
		return errors.New("api-burst: must not be negative")
	}
	return nil
}
