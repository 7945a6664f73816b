package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "hub.yaml")
	if err := os.WriteFile(file, []byte("data_dir: /from/yaml\nmqtt_addr: \":1999\"\nretention: 24h\nlog_level: debug\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"HUB_MQTT_ADDR": ":2883", "HUB_API_KEY": "k-env"}
	cfg, err := loadConfig([]string{"--config", file, "--api-key", "k-flag"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/from/yaml" {
		t.Errorf("DataDir = %q, want the YAML value", cfg.DataDir)
	}
	if cfg.MQTTAddr != ":2883" {
		t.Errorf("MQTTAddr = %q, want the environment's :2883 over YAML", cfg.MQTTAddr)
	}
	if cfg.APIKey != "k-flag" {
		t.Errorf("APIKey = %q, want the flag's over the environment's", cfg.APIKey)
	}
	if cfg.Retention != 24*time.Hour || cfg.LogLevel != "debug" {
		t.Errorf("Retention, LogLevel = %s, %s; want 24h, debug", cfg.Retention, cfg.LogLevel)
	}
	if cfg.HTTPAddr != ":8080" || cfg.CoAPAddr != ":5683" {
		t.Errorf("defaults lost: http %q coap %q", cfg.HTTPAddr, cfg.CoAPAddr)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	noEnv := func(string) string { return "" }
	dir := t.TempDir()
	badYAML := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badYAML, []byte("mqtt_adr: x\n"), 0o600)
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--retention", "soon"}, nil, "retention"},
		{[]string{"--log-level", "loud"}, nil, "log-level"},
		{[]string{"--mqtt-addr", "1883"}, nil, "mqtt-addr"},
		{[]string{"--config", badYAML}, nil, "mqtt_adr"},
		{nil, map[string]string{"HUB_RETENTION": "forever"}, "HUB_RETENTION"},
		{[]string{"extra"}, nil, "unexpected argument"},
	}
	for _, tt := range tests {
		getenv := noEnv
		if tt.env != nil {
			getenv = func(k string) string { return tt.env[k] }
		}
		_, err := loadConfig(tt.args, getenv)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("loadConfig(%v, %v) error = %v, want one mentioning %q", tt.args, tt.env, err, tt.want)
		}
	}
}

func TestLoadConfigTLS(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "hub.yaml")
	yaml := "tls_cert: /yaml/cert.pem\ntls_key: /yaml/key.pem\ntls_client_ca: /yaml/ca.pem\nmqtts_addr: \":1883\"\nhttps_addr: \":9443\"\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"HUB_TLS_CERT": "/env/cert.pem", "HUB_MQTTS_ADDR": ":2883", "HUB_TLS_RELOAD_INTERVAL": "5s"}
	cfg, err := loadConfig([]string{"--config", file, "--mqtts-addr", ":3883"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLSCert != "/env/cert.pem" || cfg.TLSKey != "/yaml/key.pem" || cfg.TLSClientCA != "/yaml/ca.pem" {
		t.Errorf("TLS files = %q %q %q, want the environment's cert and the YAML key and CA", cfg.TLSCert, cfg.TLSKey, cfg.TLSClientCA)
	}
	if cfg.MQTTSAddr != ":3883" || cfg.HTTPSAddr != ":9443" || cfg.MQTTWSSAddr != ":8084" || cfg.TLSReloadInterval != 5*time.Second {
		t.Errorf("mqtts %q https %q wss %q reload %s; want flag :3883, YAML :9443, default :8084, env 5s",
			cfg.MQTTSAddr, cfg.HTTPSAddr, cfg.MQTTWSSAddr, cfg.TLSReloadInterval)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", "c.pem"}, "tls-key: must be set"},
		{[]string{"--tls-client-ca", "ca.pem"}, "tls-client-ca: needs tls-cert"},
		{[]string{"--mqtts-addr", "8883"}, "mqtts-addr"},
	} {
		if _, err := loadConfig(tc.args, func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("loadConfig(%v) error = %v, want one mentioning %q", tc.args, err, tc.want)
		}
	}
}

func TestLoadConfigAdmission(t *testing.T) {
	file := filepath.Join(t.TempDir(), "hub.yaml")
	if err := os.WriteFile(file, []byte("device_rate: 100\ntenant_rate: 6000/m\ndevice_max_connections: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"HUB_DEVICE_BYTES_RATE": "64/s"}
	cfg, err := loadConfig([]string{"--config", file, "--api-rate", "5/s"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DeviceRate != 100 || cfg.TenantRate != 100 || cfg.DeviceBytesRate != 64 || cfg.APIRate != 5 || cfg.DeviceMaxConnections != 1 {
		t.Errorf("device rate %v, tenant rate %v, device bytes rate %v, api rate %v, device connections %d; want 100, 100 (6000/m), 64, 5, 1",
			cfg.DeviceRate, cfg.TenantRate, cfg.DeviceBytesRate, cfg.APIRate, cfg.DeviceMaxConnections)
	}
	if cfg.AuthMaxFailures != 10 || cfg.MaxTopicLevels != 16 || cfg.AdmissionMaxDelay != time.Second {
		t.Errorf("admission defaults lost: %d failures, %d levels, %v delay", cfg.AuthMaxFailures, cfg.MaxTopicLevels, cfg.AdmissionMaxDelay)
	}
	for _, args := range [][]string{{"--device-rate", "fast"}, {"--max-subscriptions", "-1"}, {"--admission-max-delay", "2h"}} {
		if _, err := loadConfig(args, func(string) string { return "" }); err == nil {
			t.Errorf("loadConfig(%v): no error", args)
		}
	}
}
