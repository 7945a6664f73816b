package mqtt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/protocols"
)

// hook connects mochi's events to the Server. It is the only hook: mochi grants a connection or
// an ACL check when any hook does, so nothing else may be added (never auth.AllowHook).
type hook struct {
	mochi.HookBase
	s *Server
}

func (h *hook) ID() string { return "tributary" }

func (h *hook) Provides(b byte) bool {
	switch b {
	case mochi.OnConnect, mochi.OnConnectAuthenticate, mochi.OnACLCheck,
		mochi.OnSessionEstablished, mochi.OnDisconnect, mochi.OnSubscribed, mochi.OnPacketRead,
		mochi.OnPublish, mochi.OnPacketProcessed, mochi.OnWill,
		mochi.OnPacketEncode, mochi.OnPacketSent, mochi.OnPublishDropped,
		mochi.OnSubscribe:
		return true
	}
	return false
}

// errRefused ends a connection whose CONNACK refusal was already sent.
var errRefused = errors.New("connection refused")

// OnConnect checks the credentials. It runs before OnConnectAuthenticate so that a refusal can
// carry "not authorized" (v5 0x87, v3 return code 5) rather than mochi's "bad username or
// password", and so that it is dead-lettered.
func (h *hook) OnConnect(cl *mochi.Client, pk packets.Packet) error {
	s := h.s
	if err := h.authThrottled(cl); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	user := string(pk.Connect.Username)
	certID, err := s.certDevice(cl, user)
	switch {
	case err != nil:
	case certID != "":
		// Authenticated by its TLS client certificate: no token needed.
		user = certID
		cl.Properties.Username = []byte(certID)
	case user == "":
		err = errors.New("no username: devices connect with their ID and token (or a client certificate over TLS), applications with username app and an API key")
	case user == protocols.AppUsername:
		err = h.connectApp(ctx, cl, pk)
	case user == devices.ProvisionID:
		if err := h.connectProvisioning(ctx, cl, pk); err != nil {
			h.authResult(cl, false)
			return err
		}
	default:
		if err = s.auth.AuthenticateDevice(ctx, user, string(pk.Connect.Password)); err != nil {
			err = errors.New("unknown device or wrong token") // never which
		}
	}
	if user != devices.ProvisionID {
		s.auditLogin(cl, user, err)
	}
	h.authResult(cl, err == nil)
	if err != nil {
		return h.refuse(ctx, cl, user, packets.ErrNotAuthorized, err.Error())
	}
	// A session belongs to one identity: without this, anyone could take over another client's
	// persistent session, subscriptions included, by connecting with its client ID. The one
	// exception is a device taking over the provisioning session that claimed its ID (client
	// ID = device ID): a device provisions, disconnects and connects as itself at once, and its
	// provisioning session may not be gone yet.
	if old, ok := s.broker.Clients.Get(cl.ID); ok && !bytes.Equal(old.Properties.Username, cl.Properties.Username) &&
		!(string(old.Properties.Username) == devices.ProvisionID && user == cl.ID) {
		return h.refuse(ctx, cl, user, packets.ErrClientIdentifierNotValid, "client ID in use by another identity")
	}
	if err := h.admitConnection(ctx, cl, user); err != nil {
		return err
	}
	if user == devices.ProvisionID {
		s.provKeys.Store(cl, string(pk.Connect.Password))
	}
	h.s.authed.Store(cl, struct{}{})
	return nil
}

// refuse sends the CONNACK refusal, dead-letters it and ends the connection.
func (h *hook) refuse(ctx context.Context, cl *mochi.Client, user string, code packets.Code, reason string) error {
	s := h.s
	if cl.Properties.ProtocolVersion < 5 && code == packets.ErrNotAuthorized {
		code = packets.Err3NotAuthorized // mochi has no v3 mapping for 0x87
	}
	_ = s.broker.SendConnack(cl, code, false, nil)
	s.apps.Delete(cl)
	s.adm.appBuckets.Delete(cl)
	dev := ""
	if user != protocols.AppUsername && devices.ValidID(user) {
		dev = user
	}
	s.log.Info("mqtt connection refused", "client", clip(cl.ID), "username", clip(user), "remote", cl.Net.Remote, "reason", reason)
	s.in.DeadLetterAuth(ctx, protocolName, dev, "", fmt.Sprintf("mqtt connect (client %q from %s): %s", clip(cl.ID), cl.Net.Remote, reason))
	return errRefused
}

// clip shortens client-chosen strings for logs and dead letters.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// OnConnectAuthenticate admits exactly the clients OnConnect has checked.
func (h *hook) OnConnectAuthenticate(cl *mochi.Client, _ packets.Packet) bool {
	_, ok := h.s.authed.LoadAndDelete(cl)
	return ok
}

// OnACLCheck decides subscriptions (write false) and, through mochi, which subscribers a
// message may be delivered to: applications may subscribe to anything, devices to their own
// state/desired and commands only. Publishes (write true) are always let through to OnPublish,
// where the ingest pipeline checks the topic and dead-letters refusals with the reason.
func (h *hook) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	if write || cl.Net.Inline {
		return true
	}
	if isProvisioning(cl) {
		return topic == ProvisionTopic(cl.ID)
	}
	id := identify(cl.Properties.Username)
	if id.App {
		return h.s.appMay(cl, topic)
	}
	return protocols.DeviceMaySubscribe(id.DeviceID, topic)
}

func (h *hook) OnSessionEstablished(cl *mochi.Client, _ packets.Packet) {
	h.s.connected.Inc()
	if id := identify(cl.Properties.Username); !id.App && !isProvisioning(cl) {
		h.s.deviceUp(id.DeviceID, cl.Net.Remote)
		h.s.subscribedCommands(cl, slices.Collect(maps.Keys(cl.State.Subscriptions.GetAll()))) // a session taken over
	}
}

func (h *hook) OnDisconnect(cl *mochi.Client, err error, _ bool) {
	h.s.connected.Dec()
	h.s.forgetAcks(cl)
	h.s.apps.Delete(cl)
	h.s.adm.appBuckets.Delete(cl)
	h.s.releaseConnection(cl)
	if isProvisioning(cl) {
		h.s.provKeys.Delete(cl)
	} else if id := identify(cl.Properties.Username); !id.App {
		h.s.deviceDown(id.DeviceID)
	}
	h.s.log.Debug("mqtt client disconnected", "client", cl.ID, "remote", cl.Net.Remote, "err", err)
}

// OnPublish sends a client's PUBLISH through the ingest pipeline, synchronously on the client's
// goroutine: a QoS 1/2 message is stored before mochi writes the PUBACK/PUBREC, and a client
// publishing faster than JetStream stores waits (back-pressure). A stored message is acked but
// not delivered from here: the fan-out delivers it once from the stream, like messages that came
// in any other way. See outcome for refusals.
func (h *hook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // the fan-out's own publishes
	}
	if isProvisioning(cl) {
		return h.refuseProvisioningPublish(cl, pk)
	}
	s := h.s
	if !s.beginStore(cl) {
		return pk, packets.ErrRejectPacket // shutting down: neither stored nor acked
	}
	if !h.admitPublish(cl, pk) {
		return pk, packets.ErrRejectPacket // over a rate limit (admission.go)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	_, err := s.in.Accept(ctx, toMessage(s.identity(cl), pk))
	cancel()

	act, code := outcome(cl.Properties.ProtocolVersion, pk.FixedHeader.Qos, err)
	if err != nil {
		s.log.Debug("mqtt publish refused", "client", cl.ID, "topic", pk.TopicName, "qos", pk.FixedHeader.Qos, "answer", act, "err", err)
	}
	switch act {
	case actAck:
		return pk, packets.CodeSuccessIgnore
	case actNack:
		h.nack(cl, pk, code, reasonString(err))
	case actDisconnect:
		cl.Stop(packets.ErrNotAuthorized)
	case actRetry:
		cl.Stop(code) // the client reconnects (perhaps to another hub) and resends
	}
	return pk, packets.ErrRejectPacket
}

// nack answers a refused MQTT 5 QoS 1/2 PUBLISH with its reason code: a PUBACK, or a PUBREC for
// QoS 2 (which ends that exchange). mochi would only ever send a PUBACK, and log an error.
func (h *hook) nack(cl *mochi.Client, pk packets.Packet, code packets.Code, reason string) {
	ack := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Puback},
		PacketID:    pk.PacketID,
		ReasonCode:  code.Code,
		Properties:  packets.Properties{ReasonString: reason},
	}
	if pk.FixedHeader.Qos == 2 {
		ack.FixedHeader.Type = packets.Pubrec
	}
	err := cl.WritePacket(ack)
	if errors.Is(err, packets.ErrPacketTooLarge) { // over the client's maximum packet size
		ack.Properties.ReasonString = ""
		err = cl.WritePacket(ack)
	}
	if err != nil {
		h.s.log.Debug("mqtt publish refusal not sent", "client", cl.ID, "err", err)
	}
}

// OnPacketProcessed runs after mochi has answered a packet; for a PUBLISH that is after the
// PUBACK was written, which is what shutdown waits for.
func (h *hook) OnPacketProcessed(cl *mochi.Client, pk packets.Packet, _ error) {
	if pk.FixedHeader.Type == packets.Publish && !cl.Net.Inline {
		h.s.endStore(cl)
	}
}

// OnWill sends a disconnected client's Will through the pipeline like any PUBLISH, and hands
// mochi back an empty Will so that nothing is delivered that is not stored. A Will Delay
// Interval is not honoured: the Will is stored when the connection ends.
func (h *hook) OnWill(cl *mochi.Client, will mochi.Will) (mochi.Will, error) {
	s := h.s
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: will.Qos, Retain: will.Retain},
		TopicName:   will.TopicName,
		Payload:     will.Payload,
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	if _, err := s.in.Accept(ctx, toMessage(s.identity(cl), pk)); err != nil {
		s.log.Debug("mqtt will refused", "client", cl.ID, "topic", will.TopicName, "err", err)
	}
	return mochi.Will{}, nil
}

// OnPacketEncode advertises the maximum packet size to MQTT 5 clients (mochi does not).
//
// It also records commands before they are written: the device's PUBACK can be read before
// OnPacketSent runs, and must find the command.
func (h *hook) OnPacketEncode(cl *mochi.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Publish {
		h.s.commandSent(cl, pk)
	}
	if pk.FixedHeader.Type == packets.Suback {
		pk = h.s.subackReasons(cl, pk)
	}
	if pk.FixedHeader.Type == packets.Connack && pk.ReasonCode < 0x80 && cl.Properties.ProtocolVersion == 5 {
		pk.Properties.MaximumPacketSize = uint32(h.s.cfg.MaxPacketSize)
	}
	return pk
}

// OnPacketSent counts deliveries: every PUBLISH written to a subscriber, retained messages and
// redeliveries included, $SYS topics excluded.
func (h *hook) OnPacketSent(cl *mochi.Client, pk packets.Packet, _ []byte) {
	switch pk.FixedHeader.Type {
	case packets.Publish:
		if len(pk.TopicName) == 0 || pk.TopicName[0] != '$' {
			h.s.deliveries.Inc()
		}
	case packets.Suback:
		if isProvisioning(cl) {
			h.provisionAfterSuback(cl)
		}
	}
}

func (h *hook) OnPublishDropped(cl *mochi.Client, pk packets.Packet) {
	metricDropped.Inc()
	h.s.log.Debug("mqtt subscriber too slow, message dropped", "client", cl.ID, "topic", pk.TopicName)
}
