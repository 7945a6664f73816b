package api

import (
	"context"
	"net/http"
	"time"

	"github.com/tributary-iot/tributary/devices"
)

// pingResult is the answer of POST /api/v1/devices/{id}/ping.
type pingResult struct {
	Device     string           `json:"device"`
	Status     string           `json:"status"`
	Protocol   string           `json:"protocol,omitempty"`
	RemoteAddr string           `json:"remote_addr,omitempty"`
	LastSeen   *time.Time       `json:"last_seen"`
	Reachable  bool             `json:"reachable"`
	Method     string           `json:"method"`
	RTTMillis  *float64         `json:"rtt_ms,omitempty"`
	MQTT       []MQTTConnection `json:"mqtt,omitempty"`
	Detail     string           `json:"detail"`
}

// POST /api/v1/devices/{id}/ping?timeout=5s checks reachability. A device connected over MQTT
// is reachable while its connection holds (MQTT has no server-initiated ping: the broker drops a
// connection silent for 1.5 × its keep-alive). Otherwise, if the device has a last known address
// from CoAP, the hub sends it a CoAP ping and reports the round-trip time.
func (m *management) ping(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := m.Devices.Get(id); err != nil {
		m.fail(w, err)
		return
	}
	timeout := 5 * time.Second
	if t := r.URL.Query().Get("timeout"); t != "" {
		d, err := devices.ParseDuration(t)
		if err != nil || d <= 0 || time.Duration(d) > 60*time.Second {
			writeError(w, http.StatusBadRequest, "timeout: want a duration up to 60s, e.g. 5s")
			return
		}
		timeout = time.Duration(d)
	}
	p := m.Presence(id)
	res := pingResult{Device: id, Status: p.Status, Protocol: p.Protocol, RemoteAddr: p.RemoteAddr, LastSeen: p.LastSeen}
	if m.MQTT != nil {
		if c, ok := m.MQTT.DeviceConnection(id); ok {
			res.Reachable, res.Method, res.MQTT = true, "mqtt-connection", []MQTTConnection{c}
			res.RemoteAddr = c.RemoteAddr
			res.Detail = "connected over MQTT to this hub instance; MQTT has no server-initiated ping, and the connection is dropped after 1.5 × keep-alive without a packet"
			writeJSON(w, http.StatusOK, res)
			return
		}
	}
	if p.Status == devices.StatusOnline && p.Protocol == "mqtt" {
		res.Reachable, res.Method = true, "mqtt-connection"
		res.Detail = "connected over MQTT to another hub instance"
		writeJSON(w, http.StatusOK, res)
		return
	}
	if p.Protocol != "coap" || p.RemoteAddr == "" || m.CoAP == nil {
		res.Method = "none"
		res.Detail = "no MQTT connection and no known CoAP address to ping"
		writeJSON(w, http.StatusOK, res)
		return
	}
	res.Method = "coap-ping"
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	rtt, err := m.CoAP.Ping(ctx, p.RemoteAddr)
	if err != nil {
		res.Detail = err.Error()
		writeJSON(w, http.StatusOK, res)
		return
	}
	ms := float64(rtt.Microseconds()) / 1000
	res.Reachable, res.RTTMillis = true, &ms
	res.Detail = "CoAP ping (empty confirmable) answered by " + p.RemoteAddr
	writeJSON(w, http.StatusOK, res)
}
