package hub

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/protocols/admission"
	"github.com/tributary-iot/tributary/tlsconf"
)

// Config is everything hubd can be told; cmd/hubd fills it from flags, HUB_* environment
// variables and a YAML file. The yaml keys are the flag names with '-' as '_'.
type Config struct {
	DataDir    string `yaml:"data_dir"`
	HTTPAddr   string `yaml:"http_addr"`
	MQTTAddr   string `yaml:"mqtt_addr"`
	MQTTWSAddr string `yaml:"mqtt_ws_addr"`
	CoAPAddr   string `yaml:"coap_addr"`
	CoAPSAddr  string `yaml:"coaps_addr"`
	NATSURL    string `yaml:"nats_url"`
	NATSAddr   string `yaml:"nats_addr"`

	InfluxURL    string `yaml:"influx_url"`
	InfluxToken  string `yaml:"influx_token"`
	InfluxOrg    string `yaml:"influx_org"`
	InfluxBucket string `yaml:"influx_bucket"`

	// APIKey is the admin key; empty means generate one at first start and keep it in DataDir.
	APIKey    string        `yaml:"api_key"`
	Retention time.Duration `yaml:"retention"`
	// RetentionInterval is how often tenants' retention quotas are enforced on the IOT stream
	// (0: a minute).
	RetentionInterval time.Duration `yaml:"retention_interval"`
	// MaxPayload is the largest device payload accepted, in bytes.
	MaxPayload int `yaml:"max_payload"`
	// Replicas for streams and KV buckets (0: 3 on an external NATS cluster, else 1).
	Replicas int `yaml:"replicas"`

	LogLevel  string `yaml:"log_level"`
	LogFormat string `yaml:"log_format"`

	// TLS listeners, served only when TLSCert and TLSKey are set ("" turns one off).
	HTTPSAddr   string `yaml:"https_addr"`
	MQTTSAddr   string `yaml:"mqtts_addr"`
	MQTTWSSAddr string `yaml:"mqtt_wss_addr"`
	// TLSCert and TLSKey are PEM files, re-read when they change; TLSClientCA is a PEM bundle
	// of the CAs that sign device client certificates ("": no client certificates).
	TLSCert     string `yaml:"tls_cert"`
	TLSKey      string `yaml:"tls_key"`
	TLSClientCA string `yaml:"tls_client_ca"`
	// TLSReloadInterval is how often the TLS files are checked for changes.
	TLSReloadInterval time.Duration `yaml:"tls_reload_interval"`

	// LeaseTTL is how long work run once cluster-wide (each rule) stays with an instance that
	// stopped renewing its lease: about the longest failover time (0: 5s).
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// Admission control (protocols/admission): rates of each device and each tenant (0: no
	// limit), connection limits, failed-authentication throttling, topic depth, subscriptions
	// per client and the HTTP API rate per key. Device types and devices override the device
	// limits with their own "limits".
	DeviceRate           admission.Rate `yaml:"device_rate"`
	DeviceBurst          int            `yaml:"device_burst"`
	DeviceBytesRate      admission.Rate `yaml:"device_bytes_rate"`
	DeviceBytesBurst     int            `yaml:"device_bytes_burst"`
	DeviceMaxConnections int            `yaml:"device_max_connections"`
	TenantRate           admission.Rate `yaml:"tenant_rate"`
	TenantBurst          int            `yaml:"tenant_burst"`
	TenantBytesRate      admission.Rate `yaml:"tenant_bytes_rate"`
	TenantBytesBurst     int            `yaml:"tenant_bytes_burst"`
	TenantMaxConnections int            `yaml:"tenant_max_connections"`
	MaxConnections       int            `yaml:"max_connections"`
	AdmissionMaxDelay    time.Duration  `yaml:"admission_max_delay"`
	AuthMaxFailures      int            `yaml:"auth_max_failures"`
	AuthFailureWindow    time.Duration  `yaml:"auth_failure_window"`
	MaxTopicLevels       int            `yaml:"max_topic_levels"`
	MaxSubscriptions     int            `yaml:"max_subscriptions"`
	APIRate              admission.Rate `yaml:"api_rate"`
	APIBurst             int            `yaml:"api_burst"`
}

// admissionConfig is the admission part of the configuration.
func (c Config) admissionConfig() admission.Config {
	return admission.Config{
		Device: devices.Limits{Rate: float64(c.DeviceRate), Burst: c.DeviceBurst, BytesRate: float64(c.DeviceBytesRate),
			BytesBurst: c.DeviceBytesBurst, MaxConnections: c.DeviceMaxConnections},
		Tenant: devices.Limits{Rate: float64(c.TenantRate), Burst: c.TenantBurst, BytesRate: float64(c.TenantBytesRate),
			BytesBurst: c.TenantBytesBurst, MaxConnections: c.TenantMaxConnections},
		MaxConnections:   c.MaxConnections,
		MaxDelay:         c.AdmissionMaxDelay,
		MaxPayload:       c.MaxPayload,
		AuthMaxFailures:  c.AuthMaxFailures,
		AuthWindow:       c.AuthFailureWindow,
		MaxTopicLevels:   c.MaxTopicLevels,
		MaxSubscriptions: c.MaxSubscriptions,
		APIRate:          c.APIRate,
		APIBurst:         c.APIBurst,
	}
}

// Defaults returns the configuration of a hub started with no flags.
func Defaults() Config {
	return Config{
		DataDir:      "./data",
		HTTPAddr:     ":8080",
		MQTTAddr:     ":1883",
		MQTTWSAddr:   ":8083",
		CoAPAddr:     ":5683",
		CoAPSAddr:    ":5684",
		NATSAddr:     "127.0.0.1:4222",
		InfluxBucket: "iot",
		Retention:    168 * time.Hour,
		MaxPayload:   256 << 10,
		LogLevel:     "info",
		LogFormat:    "text",

		HTTPSAddr:         ":8443",
		MQTTSAddr:         ":8883",
		MQTTWSSAddr:       ":8084",
		TLSReloadInterval: tlsconf.DefaultReloadInterval,
		AdmissionMaxDelay: admission.DefaultMaxDelay,
		AuthMaxFailures:   admission.DefaultAuthMaxFailures,
		AuthFailureWindow: admission.DefaultAuthWindow,
		MaxTopicLevels:    admission.DefaultMaxTopicLevels,
		MaxSubscriptions:  admission.DefaultMaxSubscriptions,
	}
}

// tlsConfig is the TLS part of c.
func (c Config) tlsConfig() tlsconf.Config {
	return tlsconf.Config{CertFile: c.TLSCert, KeyFile: c.TLSKey, ClientCAFile: c.TLSClientCA, ReloadInterval: c.TLSReloadInterval}
}

// Validate names the first setting that is wrong.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("data-dir: must not be empty")
	}
	for _, a := range []struct{ name, addr string }{
		{"http-addr", c.HTTPAddr}, {"mqtt-addr", c.MQTTAddr}, {"mqtt-ws-addr", c.MQTTWSAddr},
		{"coap-addr", c.CoAPAddr}, {"coaps-addr", c.CoAPSAddr}, {"nats-addr", c.NATSAddr},
		{"https-addr", c.HTTPSAddr}, {"mqtts-addr", c.MQTTSAddr}, {"mqtt-wss-addr", c.MQTTWSSAddr},
	} {
		if a.addr == "" {
			if a.name == "http-addr" || a.name == "mqtt-addr" || a.name == "coap-addr" {
				return fmt.Errorf("%s: must not be empty", a.name)
			}
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return fmt.Errorf("%s: %q is not host:port (%v)", a.name, a.addr, err)
		}
	}
	if c.Retention <= 0 {
		return fmt.Errorf("retention: must be positive, got %s", c.Retention)
	}
	if c.RetentionInterval < 0 {
		return fmt.Errorf("retention-interval: must not be negative, got %s", c.RetentionInterval)
	}
	if c.MaxPayload <= 0 || c.MaxPayload > 1<<20-16<<10 {
		return fmt.Errorf("max-payload: must be 1..%d bytes, got %d", 1<<20-16<<10, c.MaxPayload)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log-level: want debug, info, warn or error, got %q", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("log-format: want text or json, got %q", c.LogFormat)
	}
	if err := c.tlsConfig().Validate(); err != nil {
		return err
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		return fmt.Errorf("replicas: want 0..5, got %d", c.Replicas)
	}
	if c.LeaseTTL != 0 && (c.LeaseTTL < 300*time.Millisecond || c.LeaseTTL > 10*time.Minute) {
		return fmt.Errorf("lease-ttl: want 300ms..10m, got %s", c.LeaseTTL)
	}
	if err := c.admissionConfig().Validate(); err != nil {
		return err
	}
	return nil
}
