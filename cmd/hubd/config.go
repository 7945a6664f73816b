package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/tributary-iot/tributary/hub"
)

// loadConfig merges, from lowest to highest precedence: defaults, the YAML file named by
// --config (or HUB_CONFIG), HUB_<FLAG_NAME> environment variables, and flags.
func loadConfig(args []string, getenv func(string) string) (hub.Config, error) {
	cfg := hub.Defaults()
	fs := flag.NewFlagSet("hubd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	configPath := fs.String("config", "", "YAML file with settings (keys are flag names with _ for -)")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "JetStream store, keys, local state")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "REST API, live streams, dashboard, /metrics, /healthz, /readyz")
	fs.StringVar(&cfg.MQTTAddr, "mqtt-addr", cfg.MQTTAddr, "MQTT 3.1.1 and 5 over TCP")
	fs.StringVar(&cfg.MQTTWSAddr, "mqtt-ws-addr", cfg.MQTTWSAddr, "MQTT over WebSocket (empty: off)")
	fs.StringVar(&cfg.CoAPAddr, "coap-addr", cfg.CoAPAddr, "CoAP over UDP")
	fs.StringVar(&cfg.CoAPSAddr, "coaps-addr", cfg.CoAPSAddr, "CoAP over DTLS with pre-shared keys, and certificates with --tls-cert (empty: off)")
	fs.StringVar(&cfg.NATSURL, "nats-url", cfg.NATSURL, "external NATS server or cluster (comma-separated URLs); empty runs the embedded server")
	fs.StringVar(&cfg.NATSAddr, "nats-addr", cfg.NATSAddr, "client listener of the embedded NATS server (empty: in-process only)")
	fs.StringVar(&cfg.InfluxURL, "influx-url", cfg.InfluxURL, "InfluxDB URL for time-series storage (empty: off)")
	fs.StringVar(&cfg.InfluxToken, "influx-token", cfg.InfluxToken, "InfluxDB token (1.8: user:password or empty)")
	fs.StringVar(&cfg.InfluxOrg, "influx-org", cfg.InfluxOrg, "InfluxDB organization (1.8: empty)")
	fs.StringVar(&cfg.InfluxBucket, "influx-bucket", cfg.InfluxBucket, "InfluxDB bucket (1.8: database/retention-policy)")
	fs.StringVar(&cfg.APIKey, "api-key", cfg.APIKey, "admin API key (default: generated at first start and kept in data-dir)")
	fs.DurationVar(&cfg.Retention, "retention", cfg.Retention, "how long raw device messages stay in the hub's streams")
	fs.DurationVar(&cfg.RetentionInterval, "retention-interval", cfg.RetentionInterval, "how often tenants' retention quotas are enforced on the stream (0: 1m)")
	fs.IntVar(&cfg.MaxPayload, "max-payload", cfg.MaxPayload, "largest device payload accepted, in bytes")
	fs.IntVar(&cfg.Replicas, "replicas", cfg.Replicas, "replicas of streams and KV buckets (0: 3 on an external NATS cluster, else 1)")
	fs.DurationVar(&cfg.LeaseTTL, "lease-ttl", cfg.LeaseTTL, "how long a dead instance's rules wait before another instance takes them over (0: 5s)")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error")
	fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "text or json")
	fs.StringVar(&cfg.HTTPSAddr, "https-addr", cfg.HTTPSAddr, "HTTPS for the API and dashboard, served with --tls-cert (empty: off)")
	fs.StringVar(&cfg.MQTTSAddr, "mqtts-addr", cfg.MQTTSAddr, "MQTT over TLS, served with --tls-cert (empty: off)")
	fs.StringVar(&cfg.MQTTWSSAddr, "mqtt-wss-addr", cfg.MQTTWSSAddr, "MQTT over secure WebSocket, served with --tls-cert (empty: off)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", cfg.TLSCert, "PEM certificate chain for the TLS listeners; re-read when it changes (empty: no TLS)")
	fs.StringVar(&cfg.TLSKey, "tls-key", cfg.TLSKey, "PEM private key of --tls-cert")
	fs.StringVar(&cfg.TLSClientCA, "tls-client-ca", cfg.TLSClientCA, "PEM bundle of CAs signing device client certificates (CN or SAN = device ID); empty: tokens only")
	fs.DurationVar(&cfg.TLSReloadInterval, "tls-reload-interval", cfg.TLSReloadInterval, "how often the TLS files are checked for changes")
	fs.Var(&cfg.DeviceRate, "device-rate", "messages each device may publish, e.g. 100/s or 600/m (0: no limit)")
	fs.IntVar(&cfg.DeviceBurst, "device-burst", cfg.DeviceBurst, "messages a device may send at once above its rate (0: one second's worth)")
	fs.Var(&cfg.DeviceBytesRate, "device-bytes-rate", "payload bytes each device may publish, e.g. 65536/s (0: no limit)")
	fs.IntVar(&cfg.DeviceBytesBurst, "device-bytes-burst", cfg.DeviceBytesBurst, "payload bytes a device may send at once (0: one second's worth, at least max-payload)")
	fs.IntVar(&cfg.DeviceMaxConnections, "device-max-connections", cfg.DeviceMaxConnections, "MQTT connections one device may hold at a time (0: no limit)")
	fs.Var(&cfg.TenantRate, "tenant-rate", "messages all devices of one tenant may publish together, e.g. 1000/s (0: no limit)")
	fs.IntVar(&cfg.TenantBurst, "tenant-burst", cfg.TenantBurst, "burst of the tenant message rate (0: one second's worth)")
	fs.Var(&cfg.TenantBytesRate, "tenant-bytes-rate", "payload bytes all devices of one tenant may publish together (0: no limit)")
	fs.IntVar(&cfg.TenantBytesBurst, "tenant-bytes-burst", cfg.TenantBytesBurst, "burst of the tenant byte rate (0: one second's worth, at least max-payload)")
	fs.IntVar(&cfg.TenantMaxConnections, "tenant-max-connections", cfg.TenantMaxConnections, "MQTT device connections one tenant may hold (0: no limit)")
	fs.IntVar(&cfg.MaxConnections, "max-connections", cfg.MaxConnections, "MQTT connections this hub accepts in total (0: no limit)")
	fs.DurationVar(&cfg.AdmissionMaxDelay, "admission-max-delay", cfg.AdmissionMaxDelay, "how long a QoS 1 message over its rate may wait for its PUBACK before the client is disconnected")
	fs.IntVar(&cfg.AuthMaxFailures, "auth-max-failures", cfg.AuthMaxFailures, "failed authentications from one address within auth-failure-window before it is refused (-1: off)")
	fs.DurationVar(&cfg.AuthFailureWindow, "auth-failure-window", cfg.AuthFailureWindow, "window of auth-max-failures, and how long an address is then refused")
	fs.IntVar(&cfg.MaxTopicLevels, "max-topic-levels", cfg.MaxTopicLevels, "levels a topic or topic filter may have")
	fs.IntVar(&cfg.MaxSubscriptions, "max-subscriptions", cfg.MaxSubscriptions, "subscriptions one MQTT client may hold (0: no limit)")
	fs.Var(&cfg.APIRate, "api-rate", "HTTP API requests per API key (or per address without one), e.g. 50/s (0: no limit)")
	fs.IntVar(&cfg.APIBurst, "api-burst", cfg.APIBurst, "burst of api-rate (0: one second's worth)")

	usage := func() string {
		var b bytes.Buffer
		fs.SetOutput(&b)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
		return "usage: hubd [flags]\n\nEach flag is also HUB_<NAME> in the environment (HUB_API_KEY, HUB_DATA_DIR, ...).\n\n" + b.String()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(os.Stdout, usage())
			os.Exit(0)
		}
		return cfg, fmt.Errorf("%v\n%s", err, usage())
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q\n%s", fs.Arg(0), usage())
	}
	path := *configPath
	if path == "" {
		path = getenv("HUB_CONFIG")
	}
	if path != "" {
		if err := readYAML(path, &cfg); err != nil {
			return cfg, err
		}
	}
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := "HUB_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(name); v != "" && f.Name != "config" && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("%s=%q: %v", name, v, err)
			}
		}
	})
	if envErr != nil {
		return cfg, envErr
	}
	_ = fs.Parse(args) // flags win over file and environment
	return cfg, cfg.Validate()
}

func readYAML(path string, cfg *hub.Config) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

func newLogger(cfg hub.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
