package hub

import (
	"context"
	"log/slog"
	"time"

	"github.com/tributary-iot/tributary/api"
	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/protocols/coap"
	"github.com/tributary-iot/tributary/protocols/mqtt"
)

// Device management wiring: the API's view of devices.Manager and the protocol adapters.

// deviceRoutes are the device-management endpoints (shadows, commands, ping, types,
// provisioning keys, bulk creation, discovery, resource directory).
func deviceRoutes(m *devices.Manager, mq *mqtt.Server, cs *coap.Server, log *slog.Logger) func(*api.Router) {
	return api.ManagementRoutes(api.ManagementDeps{
		Devices:   m,
		Batch:     m.Registry,
		Presence:  m.Presence,
		Shadows:   m.Shadows,
		Commands:  m.Commands,
		Types:     m.Types,
		Keys:      m.Provisioning,
		Discovery: m.Discovery,
		Scanner:   scanner{coap.NewScanner(log)},
		Directory: m.Directory,
		MQTT:      mqttConnections{mq},
		CoAP:      cs,
	}, log)
}

// scanner adapts the CoAP scanner to the API.
type scanner struct{ s *coap.Scanner }

func (s scanner) Scan(ctx context.Context, r api.ScanRequest) ([]devices.ScanResult, error) {
	return s.s.Scan(ctx, coap.ScanRequest{Groups: r.Groups, Port: r.Port, Interfaces: r.Interfaces, Timeout: time.Duration(r.Timeout), Query: r.Query})
}

// mqttConnections adapts the MQTT server to the API.
type mqttConnections struct{ s *mqtt.Server }

func (m mqttConnections) DeviceConnection(id string) (api.MQTTConnection, bool) {
	c, ok := m.s.DeviceConnection(id)
	return api.MQTTConnection{ClientID: c.ClientID, RemoteAddr: c.RemoteAddr, ProtocolVersion: c.ProtocolVersion, KeepAlive: c.KeepAlive}, ok
}
