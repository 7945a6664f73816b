package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/protocols"
)

// CommandTracker is an optional capability of the Presence given to New (*devices.Manager has
// it): it hears when a device subscribes to its commands, so commands waiting for it are sent
// again, and when the device acknowledged a command.
type CommandTracker interface {
	// Subscribed: device now holds a subscription to filter (a SUBSCRIBE it made, or one its
	// taken-over session already had). Called on the client's goroutine; must not block.
	Subscribed(deviceID, filter string)
	// Delivered: device acknowledged (PUBACK, QoS 1/2) or was written (QoS 0) a message on
	// one of its command topics. Must not block.
	Delivered(deviceID, topic string, payload []byte)
}

// Provisioner is an optional capability of the Presence given to New (*devices.Manager has
// it): devices without an identity connect with username "provision", the provisioning key as
// password and the device ID they claim as client ID, subscribe to provision/{id}/token and
// receive their token there.
type Provisioner interface {
	// ProvisionCheck says whether key may create device id now (without using the key).
	ProvisionCheck(ctx context.Context, key, id string) error
	// Provision creates device id with key and returns its token.
	Provision(ctx context.Context, key, id string) (string, error)
}

// ProvisionTopic is where a provisioning client receives its token (or the reason it gets
// none): {"id": "...", "token": "..."} or {"id": "...", "error": "..."}.
func ProvisionTopic(id string) string { return "provision/" + id + "/token" }

// ProvisionReply is the payload on ProvisionTopic.
type ProvisionReply struct {
	ID    string `json:"id"`
	Token string `json:"token,omitempty"`
	Error string `json:"error,omitempty"`
}

// isProvisioning tells provisioning clients apart: they are neither devices nor applications.
func isProvisioning(cl *mochi.Client) bool {
	return string(cl.Properties.Username) == devices.ProvisionID
}

// connectProvisioning checks a provisioning CONNECT; nil admits the client. Its session is
// made clean, so that nothing outlives the connection (and the client ID is free for the
// device afterwards).
func (h *hook) connectProvisioning(ctx context.Context, cl *mochi.Client, pk packets.Packet) error {
	s := h.s
	id := cl.ID
	var reason string
	switch {
	case s.prov == nil:
		reason = "provisioning is not enabled on this hub"
	case len(pk.Connect.Password) == 0:
		reason = "provisioning needs the provisioning key as password"
	case !devices.ValidID(id):
		reason = "the client ID must be the device ID to claim, matching ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
	default:
		if err := s.prov.ProvisionCheck(ctx, string(pk.Connect.Password), id); err != nil {
			reason = "provisioning refused: " + err.Error()
		}
	}
	if reason != "" {
		return h.refuseWithReason(ctx, cl, devices.ProvisionID, packets.ErrNotAuthorized, reason)
	}
	cl.Properties.Clean = true
	cl.Properties.Props.SessionExpiryInterval = 0
	return nil
}

// refuseWithReason is refuse with the reason also in the v5 CONNACK's Reason String.
func (h *hook) refuseWithReason(ctx context.Context, cl *mochi.Client, user string, code packets.Code, reason string) error {
	s := h.s
	if cl.Properties.ProtocolVersion < 5 && code == packets.ErrNotAuthorized {
		code = packets.Err3NotAuthorized
	}
	if cl.Properties.ProtocolVersion == 5 {
		// mochi sends the code's Reason as the CONNACK's Reason String.
		code = packets.Code{Code: code.Code, Reason: reasonString(errors.New(reason))}
	}
	_ = s.broker.SendConnack(cl, code, false, nil)
	s.log.Info("mqtt connection refused", "client", clip(cl.ID), "username", clip(user), "remote", cl.Net.Remote, "reason", reason)
	dev := ""
	if devices.ValidID(cl.ID) {
		dev = cl.ID
	}
	s.in.DeadLetterAuth(ctx, protocolName, dev, "", "mqtt connect (client "+clip(cl.ID)+" from "+cl.Net.Remote+"): "+reason)
	return errRefused
}

// provisionAfterSuback runs once the SUBACK of a provisioning client's subscription to its
// token topic is written: the claim is made and the token (or the refusal) written to that
// client only, never through the broker's routing, so no other subscriber can see it.
func (h *hook) provisionAfterSuback(cl *mochi.Client) {
	s := h.s
	v, ok := s.provKeys.LoadAndDelete(cl)
	if !ok {
		return // claimed already (one token per connection)
	}
	if _, subscribed := cl.State.Subscriptions.Get(ProvisionTopic(cl.ID)); !subscribed {
		s.provKeys.Store(cl, v) // another subscription was refused: wait for the right one
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	reply := ProvisionReply{ID: cl.ID}
	token, err := s.prov.Provision(ctx, v.(string), cl.ID)
	if err != nil {
		reply.Error = err.Error()
		s.log.Info("mqtt provisioning refused", "client", clip(cl.ID), "remote", cl.Net.Remote, "err", err)
		s.in.DeadLetterAuth(ctx, protocolName, cl.ID, ProvisionTopic(cl.ID), "mqtt provisioning: "+err.Error())
	} else {
		reply.Token = token
	}
	body, _ := json.Marshal(reply)
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   ProvisionTopic(cl.ID),
		Payload:     body,
		Properties:  packets.Properties{ContentType: "application/json"},
	}
	if err := cl.WritePacket(pk); err != nil {
		s.log.Warn("provisioning answer not written", "client", clip(cl.ID), "err", err)
	}
}

// commandAcks remembers command messages written to devices at QoS > 0 until their PUBACK.
type commandAcks struct {
	mu sync.Mutex
	m  map[*mochi.Client]map[uint16]sentCommand
}

type sentCommand struct {
	device, topic string
	payload       []byte
}

// commandSent is called for every PUBLISH about to be written to a client: a command to the
// device itself is delivered now (QoS 0) or when acknowledged.
func (s *Server) commandSent(cl *mochi.Client, pk packets.Packet) {
	if s.tracker == nil || cl.Net.Inline || !strings.Contains(pk.TopicName, "/commands/") {
		return
	}
	dt, ok := protocols.ParseDeviceTopic(pk.TopicName)
	if !ok || dt.Kind != protocols.KindCommand || string(cl.Properties.Username) != dt.DeviceID {
		return
	}
	if pk.FixedHeader.Qos == 0 {
		s.tracker.Delivered(dt.DeviceID, pk.TopicName, pk.Payload)
		return
	}
	s.acks.mu.Lock()
	defer s.acks.mu.Unlock()
	if s.acks.m == nil {
		s.acks.m = map[*mochi.Client]map[uint16]sentCommand{}
	}
	m := s.acks.m[cl]
	if m == nil {
		m = map[uint16]sentCommand{}
		s.acks.m[cl] = m
	}
	m[pk.PacketID] = sentCommand{device: dt.DeviceID, topic: pk.TopicName, payload: pk.Payload}
}

// commandAcked is called when a client acknowledges a message sent to it.
func (s *Server) commandAcked(cl *mochi.Client, pk packets.Packet) {
	if s.tracker == nil {
		return
	}
	s.acks.mu.Lock()
	sc, ok := s.acks.m[cl][pk.PacketID]
	if ok {
		delete(s.acks.m[cl], pk.PacketID)
	}
	s.acks.mu.Unlock()
	if ok {
		s.tracker.Delivered(sc.device, sc.topic, sc.payload)
	}
}

func (s *Server) forgetAcks(cl *mochi.Client) {
	s.acks.mu.Lock()
	delete(s.acks.m, cl)
	s.acks.mu.Unlock()
}

// subscribedCommands tells the tracker about a device's subscriptions to its own command
// topics.
func (s *Server) subscribedCommands(cl *mochi.Client, filters []string) {
	if s.tracker == nil || cl.Net.Inline {
		return
	}
	id := identify(cl.Properties.Username)
	if id.App || isProvisioning(cl) {
		return
	}
	prefix := "devices/" + id.DeviceID + "/commands/"
	for _, f := range filters {
		if len(f) > len(prefix) && f[:len(prefix)] == prefix {
			s.tracker.Subscribed(id.DeviceID, f)
		}
	}
}

// OnSubscribed tells the command tracker about a device's new subscriptions to its commands.
func (h *hook) OnSubscribed(cl *mochi.Client, pk packets.Packet, reasonCodes []byte) {
	var granted []string
	for i, f := range pk.Filters {
		if i < len(reasonCodes) && reasonCodes[i] < 0x80 {
			granted = append(granted, f.Filter)
		}
	}
	h.s.subscribedCommands(cl, granted)
	h.s.auditRefusedSubscriptions(cl, pk, reasonCodes)
}

// OnPacketRead marks commands delivered when the client acknowledges them (PUBACK for QoS 1,
// PUBREC for QoS 2). mochi's OnQosComplete would not do: it also fires for the client's own
// QoS 1 publishes, whose packet IDs are another numbering.
func (h *hook) OnPacketRead(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if t := pk.FixedHeader.Type; t == packets.Puback || t == packets.Pubrec {
		h.s.commandAcked(cl, pk)
	}
	return pk, nil
}

// refuseProvisioningPublish: a provisioning client may only subscribe to its token topic.
// MQTT 5 QoS 1/2 gets reason 0x87; everything else closes the connection.
func (h *hook) refuseProvisioningPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos > 0 {
		h.nack(cl, pk, packets.ErrNotAuthorized, "a provisioning connection may only subscribe to "+ProvisionTopic(cl.ID))
	} else {
		cl.Stop(packets.ErrNotAuthorized)
	}
	return pk, packets.ErrRejectPacket
}

// Connection describes one MQTT connection of a device.
type Connection struct {
	ClientID        string
	RemoteAddr      string
	ProtocolVersion byte
	KeepAlive       int // seconds; 0: none
}

// DeviceConnection returns a connection device id holds to this server, if any (the one whose
// client ID is the device ID first).
func (s *Server) DeviceConnection(id string) (Connection, bool) {
	conn := func(cl *mochi.Client) Connection {
		return Connection{ClientID: cl.ID, RemoteAddr: cl.Net.Remote, ProtocolVersion: cl.Properties.ProtocolVersion, KeepAlive: int(cl.State.Keepalive)}
	}
	if cl, ok := s.broker.Clients.Get(id); ok && string(cl.Properties.Username) == id && !cl.Closed() && !cl.Net.Inline {
		return conn(cl), true
	}
	s.presenceMu.Lock()
	online := s.online[id] > 0
	s.presenceMu.Unlock()
	if !online {
		return Connection{}, false
	}
	for _, cl := range s.broker.Clients.GetAll() {
		if string(cl.Properties.Username) == id && !cl.Closed() && !cl.Net.Inline {
			return conn(cl), true
		}
	}
	return Connection{}, false
}
