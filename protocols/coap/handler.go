package coap

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	"github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/tributary-iot/tributary/audit"
	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/payload"
	"github.com/tributary-iot/tributary/protocols"
	"github.com/tributary-iot/tributary/streams"
)

type writer = *responsewriter.ResponseWriter[*client.Conn]

// handle is the go-coap handler for both listeners. It runs on the peer's worker goroutine.
func (s *Server) handle(w writer, r *pool.Message) {
	if c := r.Code(); c == codes.Empty || c>>5 != 0 {
		return // an empty message (Reset) or a stray response: nothing to answer
	}
	code := s.serve(w, r)
	metricRequests.WithLabelValues(r.Code().String(), codeString(code)).Inc()
}

func codeString(c codes.Code) string {
	return fmt.Sprintf("%d.%02d", c>>5, c&0x1f)
}

func (s *Server) serve(w writer, r *pool.Message) codes.Code {
	cs := stateOf(w.Conn())
	if cs == nil {
		return replyText(w, codes.InternalServerError, "no connection state")
	}
	if code, ok := s.serveExtra(w, r, cs); ok {
		return code
	}
	req, f := parseRequest(r.Options())
	if f != nil {
		return replyFailure(w, f)
	}
	ctx, cancel := context.WithTimeout(w.Conn().Context(), s.cfg.StoreTimeout)
	defer cancel()
	if req.Topic == wellKnownCore {
		if r.Code() != codes.GET {
			return replyText(w, codes.MethodNotAllowed, "/.well-known/core is read with GET")
		}
		return s.discover(w, r, cs, req)
	}
	switch r.Code() {
	case codes.POST, codes.PUT:
		return s.publish(ctx, w, r, cs, req)
	case codes.GET:
		return s.get(ctx, w, r, cs, req)
	}
	return replyText(w, codes.MethodNotAllowed, "POST or PUT sends a message, GET reads or observes a topic")
}

// checkCredentials finds who sent a request: over DTLS the PSK identity; over UDP ?key= (an
// application) or ?token= (the device named by ?id=, else by the path). Every refusal is
// dead-lettered.
func (s *Server) checkCredentials(ctx context.Context, cs *connState, req request) (protocols.Identity, *failure) {
	ctx = withSource(ctx, cs)
	if cs.isDTLS {
		return s.dtlsIdentity(ctx, cs, req)
	}
	switch {
	case req.Key != "" && req.Token != "":
		return protocols.Identity{}, s.refuse(ctx, "", req.Topic, "give token= or key=, not both")
	case req.Key != "":
		return s.appIdentity(ctx, cs, req)
	case req.Token != "":
		id := req.ID
		if id == "" && req.IsDevice {
			id = req.Device.DeviceID
		}
		if id == "" {
			return protocols.Identity{}, s.refuse(ctx, "", req.Topic, "token= needs the device ID, from the path /devices/{id}/... or as id=")
		}
		if err := s.auth.AuthenticateDevice(ctx, id, req.Token); err != nil {
			return protocols.Identity{}, s.refuse(ctx, id, req.Topic, "unknown device or wrong token")
		}
		s.seen(id, cs)
		s.auditDevice(ctx, id)
		return protocols.Identity{DeviceID: id}, nil
	}
	dev := ""
	if req.IsDevice {
		dev = req.Device.DeviceID
	}
	return protocols.Identity{}, s.refuse(ctx, dev, req.Topic, "credentials required: ?token=<device token> or ?key=<API key> in the URI query, or DTLS with a pre-shared key")
}

// refuse dead-letters a failed authentication and returns the 4.01 for it.
func (s *Server) refuse(ctx context.Context, deviceID, topic, reason string) *failure {
	if !devices.ValidID(deviceID) {
		deviceID = ""
	}
	s.in.DeadLetterAuth(ctx, protocolName, deviceID, topic, "coap: "+reason)
	principal := ""
	if deviceID != "" {
		principal = "device:" + deviceID
	}
	s.audit(ctx, audit.Event{Type: audit.TypeLogin, Outcome: audit.Failure, Principal: principal, Reason: reason})
	return fail(codes.Unauthorized, "%s", reason)
}

func (s *Server) seen(deviceID string, cs *connState) {
	if s.presence != nil {
		s.presence.Seen(deviceID, protocolName, cs.cc.RemoteAddr().String())
	}
}

// publish sends a POST or PUT through the ingest pipeline. A confirmable request is answered
// only once the message is stored.
func (s *Server) publish(ctx context.Context, w writer, r *pool.Message, cs *connState, req request) codes.Code {
	from, f := s.authenticate(ctx, cs, req)
	if f != nil {
		return replyFailure(w, f)
	}
	body, err := r.ReadBody()
	if err != nil {
		return replyText(w, codes.BadRequest, "cannot read the payload: "+err.Error())
	}
	if f := s.admitPublish(ctx, from, len(body)); f != nil {
		return replyFailure(w, f)
	}
	p := peer{Addr: cs.cc.RemoteAddr().String(), MessageID: r.MessageID(), Token: r.Token()}
	_, err = s.in.Accept(ctx, toMessage(req, from, body, r.Type() == message.Confirmable, p))
	if err == nil {
		return replyText(w, codes.Changed, "")
	}
	code := rejectionCode(err)
	if code == codes.BadRequest && req.IsDevice && !acceptsFormat(req.Device.Kind, req.ContentType) {
		code = codes.UnsupportedMediaType
	}
	reason := err.Error()
	var rej *protocols.Rejection
	if errors.As(err, &rej) {
		reason = rej.Reason
	}
	if code == codes.RequestEntityTooLarge && s.maxPayload > 0 {
		return replyText(w, code, reason, uintOption(message.Size1, uint32(s.maxPayload)))
	}
	return replyText(w, code, reason)
}

// rejectionCode translates the ingest pipeline's errors (see protocols/errors.go).
func rejectionCode(err error) codes.Code {
	switch {
	case errors.Is(err, protocols.ErrNotAuthorized):
		return codes.Unauthorized
	case errors.Is(err, protocols.ErrForbidden):
		return codes.Forbidden
	case errors.Is(err, protocols.ErrUnknownTopic):
		return codes.NotFound
	case errors.Is(err, protocols.ErrInvalidPayload):
		return codes.BadRequest
	case errors.Is(err, protocols.ErrTooLarge):
		return codes.RequestEntityTooLarge
	case errors.Is(err, protocols.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return codes.ServiceUnavailable
	}
	return codes.InternalServerError
}

// get answers a GET: with Observe=0 it registers an observation, with Observe=1 it ends one,
// and without it returns the newest message stored on the topic.
func (s *Server) get(ctx context.Context, w writer, r *pool.Message, cs *connState, req request) codes.Code {
	obs, err := r.Observe()
	if err == nil && obs == 1 {
		// Deregistration only touches this peer's own token, so it needs no credentials (go-coap's
		// Observation.Cancel, for one, sends none). The answer carries no representation.
		s.obs.removeToken(cs, string(r.Token()))
		return replyText(w, codes.Content, "")
	}
	from, f := s.authenticate(ctx, cs, req)
	if f != nil {
		return replyFailure(w, f)
	}
	if f := mayRead(from, req); f != nil {
		return replyFailure(w, f)
	}
	if f := s.appMayRead(withSource(ctx, cs), from, req); f != nil {
		return replyFailure(w, f)
	}
	if err == nil && obs == 0 {
		code := s.register(ctx, w, r, cs, req, from)
		s.observed(from, req)
		return code
	}
	env, err := s.sub.Last(ctx, req.Topic)
	switch {
	case err != nil:
		s.log.Warn("read last message", "topic", req.Topic, "err", err)
		return replyText(w, codes.ServiceUnavailable, "storage unavailable")
	case env == nil:
		return replyText(w, codes.NotFound, fmt.Sprintf("nothing stored on %s yet", req.Topic))
	}
	if tag, err := r.Options().GetBytes(message.ETag); err == nil && bytes.Equal(tag, etag(env.Seq)) {
		return replyText(w, codes.Valid, "", message.Option{ID: message.ETag, Value: tag})
	}
	return replyEnvelope(w, env)
}

// mayRead says whether from may GET or observe req.Topic: a device its own state/desired and
// commands/{name}, an application any topic under devices/ of the SPEC layout, or any other
// valid topic.
func mayRead(from protocols.Identity, req request) *failure {
	if req.IsDevice && (req.Device.Kind == protocols.KindInvalid || !devices.ValidID(req.Device.DeviceID)) {
		return fail(codes.NotFound, "/%s is not one of /devices/{id}/telemetry, events/{name}, state/reported, state/desired, commands/{name}, commands/{name}/result", req.Topic)
	}
	if from.App {
		return nil
	}
	if !req.IsDevice {
		return fail(codes.Forbidden, "device %s may read only /devices/%s/state/desired and /devices/%s/commands/{name}", from.DeviceID, from.DeviceID, from.DeviceID)
	}
	if !protocols.DeviceMaySubscribe(from.DeviceID, req.Topic) {
		return fail(codes.Forbidden, "device %s may read only /devices/%s/state/desired and /devices/%s/commands/{name}", from.DeviceID, from.DeviceID, from.DeviceID)
	}
	return nil
}

// register starts an observation. The response carries the topic's newest stored message
// (for commands nothing: a device re-registering must not run an old command again) with the
// first Observe number; messages stored later follow as notifications.
func (s *Server) register(ctx context.Context, w writer, r *pool.Message, cs *connState, req request, from protocols.Identity) codes.Code {
	o := &observer{
		cs:     cs,
		device: from.DeviceID,
		key:    keyOf(from),
		token:  string(r.Token()),
		topic:  req.Topic,
		queue:  make(chan *streams.Envelope, s.cfg.NotifyQueue),
		done:   make(chan struct{}),
	}
	// Register first, then read the newest message: whatever is stored after that read is
	// queued, and what the read returned is skipped by sequence.
	if !s.obs.add(o, s.cfg.MaxObservers, s.cfg.MaxObserversPerPeer) {
		metricObserveRefused.Inc()
		s.log.Debug("observe refused: limit reached", "remote", cs.cc.RemoteAddr().String(), "observers", s.obs.count())
		env, err := s.sub.Last(ctx, req.Topic)
		if err != nil || env == nil || req.IsDevice && req.Device.Kind == protocols.KindCommand {
			return replyText(w, codes.Content, "")
		}
		return replyEnvelope(w, env)
	}
	env, err := s.sub.Last(ctx, req.Topic)
	if err != nil {
		s.obs.remove(o)
		s.log.Warn("read last message", "topic", req.Topic, "err", err)
		return replyText(w, codes.ServiceUnavailable, "storage unavailable")
	}
	var code codes.Code
	switch {
	case env == nil:
		code = replyText(w, codes.Content, "")
	case req.IsDevice && req.Device.Kind == protocols.KindCommand:
		o.after = env.Seq // commands already stored are not sent, neither now nor queued
		code = replyText(w, codes.Content, "")
	default:
		o.after = env.Seq
		code = replyEnvelope(w, env)
	}
	if w.Message().IsModified() {
		w.Message().SetObserve(o.nextSeq())
	}
	cs.started = append(cs.started, o)
	return code
}

// discover answers GET /.well-known/core: the device layout, for the device the request is
// authenticated as or names with ?id= (no credentials are needed: the layout is no secret).
func (s *Server) discover(w writer, r *pool.Message, cs *connState, req request) codes.Code {
	dev := req.ID
	if cs.isDTLS {
		if id, f := s.sessionIdentity(cs); f == nil && !id.ident.App {
			dev = id.name
		}
	}
	if dev != "" && !devices.ValidID(dev) {
		return replyText(w, codes.BadRequest, fmt.Sprintf("id=%q is not a valid device ID", dev))
	}
	var extra []link
	if s.rd != nil {
		extra = rdLinks
	}
	body := []byte(linkFormat(dev, req.Filters, extra...))
	if len(body) == 0 {
		return replyText(w, codes.NotFound, "no resource matches the query")
	}
	var opts []message.Option
	if !cs.isDTLS && !r.HasOption(message.Block2) && len(body) > discoveryBlock {
		// Discovery needs no credentials, so a spoofed source address could use it to
		// amplify traffic: the first answer is one small block (RFC 7252 §11.3); real
		// clients fetch the rest block-wise.
		block, _ := blockwise.EncodeBlockOption(discoverySZX, 0, true)
		opts = append(opts, uintOption(message.Block2, block), uintOption(message.Size2, uint32(len(body))))
		body = body[:discoveryBlock]
	}
	if err := w.SetResponse(codes.Content, message.AppLinkFormat, bytes.NewReader(body), opts...); err != nil {
		return codes.Content
	}
	return codes.Content
}

// The first block of an unauthenticated discovery answer.
const (
	discoveryBlock = 64
	discoverySZX   = blockwise.SZX64
)

// oversizedBlock refuses, with 4.13, a block-wise upload (Block1) that announces (Size1) or
// reaches a size past the payload limit, before go-coap buffers any more of it. It reports
// whether it answered the request.
func (s *Server) oversizedBlock(cs *connState, r *pool.Message) bool {
	if s.maxPayload <= 0 || (r.Code() != codes.POST && r.Code() != codes.PUT) {
		return false
	}
	block, err := r.Options().GetUint32(message.Block1)
	if err != nil {
		return false
	}
	szx, num, _, err := blockwise.DecodeBlockOption(block)
	if err != nil {
		return false
	}
	size1, _ := r.Options().GetUint32(message.Size1)
	n, _ := r.BodySize()
	if int64(size1) <= int64(s.maxPayload) && num*szx.Size()+n <= int64(s.maxPayload) {
		return false
	}
	mid, typ, method := r.MessageID(), r.Type(), r.Code()
	// r goes back to go-coap's pool inside ProcessReceivedMessageWithHandler.
	cs.cc.ProcessReceivedMessageWithHandler(r, func(w writer, _ *pool.Message) {
		replyText(w, codes.RequestEntityTooLarge, fmt.Sprintf("payload exceeds the limit of %d bytes", s.maxPayload), uintOption(message.Size1, uint32(s.maxPayload)))
		if typ == message.Confirmable {
			w.Message().SetType(message.Acknowledgement)
			w.Message().SetMessageID(mid)
		} else {
			w.Message().SetType(message.NonConfirmable)
			w.Message().SetMessageID(cs.cc.GetMessageID())
		}
	})
	metricRequests.WithLabelValues(method.String(), codeString(codes.RequestEntityTooLarge)).Inc()
	return true
}

func uintOption(id message.OptionID, v uint32) message.Option {
	buf := make([]byte, 4)
	n, _ := message.EncodeUint32(buf, v)
	return message.Option{ID: id, Value: buf[:n]}
}

func replyFailure(w writer, f *failure) codes.Code {
	return replyText(w, f.Code, f.Msg, f.Opts...)
}

// replyText answers with code and, when msg is not empty, a text/plain diagnostic payload.
func replyText(w writer, code codes.Code, msg string, opts ...message.Option) codes.Code {
	var body *bytes.Reader
	if msg != "" {
		body = bytes.NewReader([]byte(msg))
	}
	var err error
	if body == nil {
		err = w.SetResponse(code, message.TextPlain, nil, opts...)
	} else {
		err = w.SetResponse(code, message.TextPlain, body, opts...)
	}
	if err != nil {
		return code // suppressed by the request's No-Response option
	}
	return code
}

// replyEnvelope answers 2.05 with a stored message, its content format and its stream sequence
// as ETag.
func replyEnvelope(w writer, env *streams.Envelope) codes.Code {
	opts := []message.Option{{ID: message.ETag, Value: etag(env.Seq)}}
	if cf, ok := payload.CoAPFormat(env.ContentType); ok {
		opts = append(opts, uintOption(message.ContentFormat, uint32(cf)))
	}
	if err := w.SetResponse(codes.Content, 0, nil, opts...); err != nil {
		return codes.Content
	}
	if len(env.Payload) > 0 {
		w.Message().SetBody(bytes.NewReader(env.Payload))
	}
	return codes.Content
}

func etag(seq uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	i := 0
	for i < 7 && b[i] == 0 {
		i++
	}
	return b[i:]
}
