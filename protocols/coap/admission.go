package coap

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/tributary-iot/tributary/protocols"
	"github.com/tributary-iot/tributary/protocols/admission"
)

// Admission is admission control as the CoAP adapter uses it; *admission.Controller satisfies
// it. Without it (SetAdmission not called) nothing is limited.
type Admission interface {
	// Publish admits one message of size bytes from device id (CoAP never waits: mayWait is
	// false). A refusal is an *admission.Exceeded.
	Publish(ctx context.Context, protocol, id string, size int, mayWait bool) error
	// Auth is the failed-authentication throttle.
	Auth() *admission.Guard
}

// SetAdmission turns admission control on. Call it before Run.
func (s *Server) SetAdmission(a Admission) { s.adm = a }

// authenticate is checkCredentials behind the failed-authentication throttle: a peer whose
// address failed too often is answered 4.29 with Max-Age, its credentials unchecked.
func (s *Server) authenticate(ctx context.Context, cs *connState, req request) (protocols.Identity, *failure) {
	if s.adm == nil {
		return s.checkCredentials(ctx, cs, req)
	}
	remote := cs.cc.RemoteAddr().String()
	if retry, blocked := s.adm.Auth().Blocked(protocolName, remote); blocked {
		secs := admission.RetryAfterSeconds(retry)
		return protocols.Identity{}, &failure{Code: codes.TooManyRequests,
			Msg:  fmt.Sprintf("%v from %s; retry in %ds", admission.ErrAuthThrottled, admission.Source(remote), secs),
			Opts: []message.Option{uintOption(message.MaxAge, secs)}}
	}
	id, f := s.checkCredentials(ctx, cs, req)
	switch {
	case f == nil:
		s.adm.Auth().Succeeded(remote)
	case f.Code == codes.Unauthorized && (cs.isDTLS || req.Token != "" || req.Key != ""):
		s.adm.Auth().Failed(protocolName, remote)
	}
	return id, f
}

// admitPublish applies the device's and its tenant's rates to a message before it is stored:
// over them the answer is 4.29 Too Many Requests with Max-Age saying when to try again, and
// the message is neither stored nor dead-lettered (it is counted).
func (s *Server) admitPublish(ctx context.Context, from protocols.Identity, size int) *failure {
	if s.adm == nil || from.App {
		return nil
	}
	err := s.adm.Publish(ctx, protocolName, from.DeviceID, size, false)
	if err == nil {
		return nil
	}
	var ex *admission.Exceeded
	if !errors.As(err, &ex) {
		return fail(codes.ServiceUnavailable, "%v", err)
	}
	retry := ex.RetryAfter
	if retry <= 0 {
		retry = 60e9 // as sent, never: the device must send less
	}
	secs := admission.RetryAfterSeconds(retry)
	return &failure{Code: codes.TooManyRequests, Msg: err.Error(), Opts: []message.Option{uintOption(message.MaxAge, secs)}}
}

// onConnectionAttempt refuses DTLS handshakes from addresses throttled for failed
// authentication, before any cryptography is done for them.
func (s *Server) onConnectionAttempt(addr net.Addr) error {
	if s.adm == nil {
		return nil
	}
	if _, blocked := s.adm.Auth().Blocked(protocolName, addr.String()); blocked {
		return admission.ErrAuthThrottled
	}
	return nil
}
