package mqtt

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tributary-iot/tributary/protocols/admission"
)

// Admission is admission control as the MQTT adapter uses it; *admission.Controller
// satisfies it. Without it (SetAdmission not called) nothing is limited beyond Config.
type Admission interface {
	// Publish admits one message of size bytes from device id; with mayWait it may block up
	// to its maximum delay first. A refusal is an *admission.Exceeded.
	Publish(ctx context.Context, protocol, id string, size int, mayWait bool) error
	// PublishApp admits one message an application publishes with the API key whose rate
	// bucket is key, like Publish.
	PublishApp(ctx context.Context, protocol, key string, mayWait bool) error
	// Connect admits a connection of device id ("" for applications and provisioning).
	Connect(id string, takeover bool) (release func(), err error)
	// Auth is the failed-authentication throttle.
	Auth() *admission.Guard
	MaxSubscriptions() int
	MaxTopicLevels() int
}

// admissionState is the Server's part for admission control.
type admissionState struct {
	adm   Admission
	conns sync.Map // *mochi.Client → release func()
	// appBuckets holds each application client's API rate bucket (admission.APIKeyBucket).
	appBuckets sync.Map // *mochi.Client → string
	subs       sync.Map // *mochi.Client → subRefusal, from OnSubscribe to the SUBACK's encoding
}

// subRefusal holds the reason codes of the filters of one SUBSCRIBE refused by a limit.
type subRefusal struct {
	packetID uint16
	codes    map[int]packets.Code
}

// refusedFilter replaces a refused filter in the SUBSCRIBE that mochi processes: it is not a
// valid filter, so mochi subscribes nothing and answers 0x8F (0x80 for MQTT 3.1.1), which the
// SUBACK encoding then turns into the real reason for MQTT 5 clients.
const refusedFilter = "#/refused"

// SetAdmission turns admission control on. Call it before Run.
func (s *Server) SetAdmission(a Admission) { s.adm.adm = a }

// authThrottled refuses, without looking at its credentials, a CONNECT from a source address
// that failed to authenticate too often. The refusal is counted and not dead-lettered, so a
// flood of guesses costs the hub nothing but the CONNACK.
func (h *hook) authThrottled(cl *mochi.Client) error {
	a := h.s.adm.adm
	if a == nil {
		return nil
	}
	retry, blocked := a.Auth().Blocked(protocolName, cl.Net.Remote)
	if !blocked {
		return nil
	}
	code := packets.Code{Code: packets.ErrConnectionRateExceeded.Code,
		Reason: fmt.Sprintf("%v from %s; retry in %ds", admission.ErrAuthThrottled, admission.Source(cl.Net.Remote), admission.RetryAfterSeconds(retry))}
	if cl.Properties.ProtocolVersion < 5 {
		code = packets.Err3ServerUnavailable
	}
	_ = h.s.broker.SendConnack(cl, code, false, nil)
	return errRefused
}

// authResult tells the throttle how a CONNECT's credentials fared.
func (h *hook) authResult(cl *mochi.Client, ok bool) {
	a := h.s.adm.adm
	if a == nil {
		return
	}
	if ok {
		a.Auth().Succeeded(cl.Net.Remote)
	} else {
		a.Auth().Failed(protocolName, cl.Net.Remote)
	}
}

// admitConnection applies the connection limits to an authenticated CONNECT; on refusal the
// CONNACK (v5 0x97 quota exceeded, v3 server unavailable) is sent and the refusal
// dead-lettered.
func (h *hook) admitConnection(ctx context.Context, cl *mochi.Client, user string) error {
	s := h.s
	if s.adm.adm == nil {
		return nil
	}
	id := user
	if identify([]byte(user)).App || user == "" || isProvisioning(cl) {
		id = ""
	}
	old, found := s.broker.Clients.Get(cl.ID)
	takeover := found && !old.Closed() && string(old.Properties.Username) == user
	release, err := s.adm.adm.Connect(id, takeover)
	if err != nil && s.releaseClosed() {
		release, err = s.adm.adm.Connect(id, takeover)
	}
	if err != nil {
		admission.MetricRefused.WithLabelValues(protocolName, admission.ReasonConnections).Inc()
		code := packets.Code{Code: packets.ErrQuotaExceeded.Code, Reason: err.Error()}
		if cl.Properties.ProtocolVersion < 5 {
			code = packets.Err3ServerUnavailable
		}
		_ = s.broker.SendConnack(cl, code, false, nil)
		s.log.Info("mqtt connection refused", "client", clip(cl.ID), "username", clip(user), "remote", cl.Net.Remote, "reason", err)
		s.in.DeadLetterAuth(ctx, protocolName, id, "", fmt.Sprintf("mqtt connect (client %q from %s): %v", clip(cl.ID), cl.Net.Remote, err))
		return errRefused
	}
	s.adm.conns.Store(cl, release)
	return nil
}

// releaseClosed releases the connection slots of clients that are closed but were never
// reported disconnected (mochi reports only established sessions, so a client whose CONNACK
// could not be written would otherwise hold its slot). It reports whether it freed any.
func (s *Server) releaseClosed() bool {
	freed := false
	s.adm.conns.Range(func(k, v any) bool {
		if k.(*mochi.Client).Closed() {
			s.adm.conns.Delete(k)
			v.(func())()
			freed = true
		}
		return true
	})
	return freed
}

// releaseConnection is called when a client's session ends.
func (s *Server) releaseConnection(cl *mochi.Client) {
	if v, ok := s.adm.conns.LoadAndDelete(cl); ok {
		v.(func())()
	}
	s.adm.subs.Delete(cl)
}

// admitPublish applies the device's and its tenant's rates to a PUBLISH before it is stored.
// It returns false when the message must not go on; it has then done what the limit asks:
// a QoS 0 message is dropped (counted), a QoS 1/2 message that could not be admitted within
// the maximum delay disconnects the client, MQTT 5 with reason 0x96 (device message rate) or
// 0x97 (byte rates and tenant quotas). The message is not acknowledged, so the client sends it
// again after reconnecting.
func (h *hook) admitPublish(cl *mochi.Client, pk packets.Packet) bool {
	s := h.s
	id := identify(cl.Properties.Username)
	if s.adm.adm == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	var err error
	if id.App {
		// Applications are limited by their API key's request rate, shared with its HTTP use.
		bucket, ok := s.adm.appBuckets.Load(cl)
		if !ok {
			return true
		}
		err = s.adm.adm.PublishApp(ctx, protocolName, bucket.(string), pk.FixedHeader.Qos > 0)
	} else {
		err = s.adm.adm.Publish(ctx, protocolName, id.DeviceID, len(pk.Payload), pk.FixedHeader.Qos > 0)
	}
	if err == nil {
		return true
	}
	if pk.FixedHeader.Qos == 0 {
		s.log.Debug("mqtt qos 0 message over the limit dropped", "client", cl.ID, "topic", pk.TopicName, "err", err)
		return false
	}
	s.log.Info("mqtt client over its limit disconnected", "client", clip(cl.ID), "device", id.DeviceID, "remote", cl.Net.Remote, "err", err)
	if cl.Properties.ProtocolVersion < 5 {
		cl.Stop(err)
		return false
	}
	code := packets.ErrQuotaExceeded.Code
	if errors.Is(err, admission.ErrRateLimited) {
		code = packets.ErrMessageRateTooHigh.Code
	}
	_ = s.broker.DisconnectClient(cl, packets.Code{Code: code, Reason: err.Error()})
	return false
}

// OnSubscribe applies the topic depth and subscription count limits: filters past them are
// refused (MQTT 5: 0x8F topic filter invalid for depth, 0x97 quota exceeded for the count;
// MQTT 3.1.1: 0x80), the others go on.
func (h *hook) OnSubscribe(cl *mochi.Client, pk packets.Packet) packets.Packet {
	a := h.s.adm.adm
	if a == nil || cl.Net.Inline {
		return pk
	}
	maxLevels, maxSubs := a.MaxTopicLevels(), a.MaxSubscriptions()
	have := cl.State.Subscriptions.Len()
	var refused map[int]packets.Code
	refuse := func(i int, code packets.Code) {
		if refused == nil {
			refused = map[int]packets.Code{}
			pk.Filters = append(packets.Subscriptions(nil), pk.Filters...) // not the caller's array
		}
		refused[i] = code
		pk.Filters[i].Filter = refusedFilter
	}
	for i, f := range pk.Filters {
		if n := strings.Count(f.Filter, "/") + 1; maxLevels > 0 && n > maxLevels {
			admission.MetricRefused.WithLabelValues(protocolName, admission.ReasonTopicLevels).Inc()
			refuse(i, packets.Code{Code: packets.ErrTopicFilterInvalid.Code,
				Reason: fmt.Sprintf("topic filter has %d levels, the limit is %d", n, maxLevels)})
			continue
		}
		if _, exists := cl.State.Subscriptions.Get(f.Filter); exists {
			continue // replacing a subscription does not add one
		}
		if maxSubs > 0 && have >= maxSubs {
			admission.MetricRefused.WithLabelValues(protocolName, admission.ReasonSubscriptions).Inc()
			refuse(i, packets.Code{Code: packets.ErrQuotaExceeded.Code,
				Reason: fmt.Sprintf("a client may hold %d subscriptions", maxSubs)})
			continue
		}
		have++
	}
	if refused != nil {
		h.s.adm.subs.Store(cl, subRefusal{packetID: pk.PacketID, codes: refused})
	}
	return pk
}

// subackReasons puts the reasons of refused filters into an MQTT 5 SUBACK.
func (s *Server) subackReasons(cl *mochi.Client, pk packets.Packet) packets.Packet {
	v, ok := s.adm.subs.Load(cl)
	if !ok {
		return pk
	}
	r := v.(subRefusal)
	if r.packetID != pk.PacketID {
		return pk
	}
	s.adm.subs.Delete(cl)
	if cl.Properties.ProtocolVersion < 5 {
		return pk
	}
	codes := append([]byte(nil), pk.ReasonCodes...)
	var reasons []string
	for i, c := range r.codes {
		if i < len(codes) {
			codes[i] = c.Code
			reasons = append(reasons, c.Reason)
		}
	}
	slices.Sort(reasons)
	pk.ReasonCodes = codes
	pk.Properties.ReasonString = strings.Join(slices.Compact(reasons), "; ")
	return pk
}
