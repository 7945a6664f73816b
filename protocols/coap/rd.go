package coap

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/devices/linkformat"
	"github.com/tributary-iot/tributary/protocols"
)

// This file serves the device-management paths that are not topics: the CoRE Resource
// Directory (RFC 9176: /rd, /rd/{id}, /rd-lookup/ep, /rd-lookup/res) and provisioning
// (/provision). They are optional capabilities of the Presence given to New.

// CommandTracker is an optional capability of the Presence given to New (*devices.Manager has
// it): it hears when a device observes one of its command topics (pending commands are then
// sent again) and when the device acknowledged a command notification.
type CommandTracker interface {
	Subscribed(deviceID, filter string)
	Delivered(deviceID, topic string, payload []byte)
}

// Provisioner is an optional capability of the Presence given to New: POST
// /provision?key=<provisioning key>&id=<device id> creates the device and answers its token.
type Provisioner interface {
	Provision(ctx context.Context, key, id string) (token string, err error)
}

// directoryProvider is an optional capability of the Presence given to New: with it the
// server is a CoRE Resource Directory.
type directoryProvider interface {
	RD() *devices.Directory
}

// codeConflict is 4.09 Conflict (RFC 8132), which go-coap does not name.
const codeConflict = codes.Code(4<<5 | 9)

// extraQuery is a request's URI query for the paths below: credentials apart, every
// parameter in order.
type extraQuery struct {
	token, key, id string
	params         []linkformat.Filter // name=value, in order, credentials excluded
}

func (q extraQuery) get(name string) (string, bool) {
	for _, p := range q.params {
		if p.Name == name {
			return p.Value, true
		}
	}
	return "", false
}

func parseExtraQuery(opts message.Options) (extraQuery, *failure) {
	var q extraQuery
	for _, o := range opts {
		if o.ID != message.URIQuery {
			continue
		}
		k, v, _ := strings.Cut(string(o.Value), "=")
		var dst *string
		switch k {
		case "token":
			dst = &q.token
		case "key":
			dst = &q.key
		case "id":
			dst = &q.id
		default:
			f, err := linkformat.ParseFilter(string(o.Value))
			if err != nil {
				return q, fail(codes.BadRequest, "query: %v", err)
			}
			q.params = append(q.params, f)
			continue
		}
		if *dst != "" {
			return q, fail(codes.BadRequest, "query parameter %s= given twice", k)
		}
		if v == "" {
			return q, fail(codes.BadRequest, "query parameter %s= is empty", k)
		}
		*dst = v
	}
	return q, nil
}

// serveExtra handles /rd..., /rd-lookup/... and /provision; ok is false for other paths.
func (s *Server) serveExtra(w writer, r *pool.Message, cs *connState) (code codes.Code, ok bool) {
	var path []string
	for _, o := range r.Options() {
		if o.ID == message.URIPath {
			path = append(path, string(o.Value))
		}
	}
	if len(path) == 0 {
		return 0, false
	}
	switch path[0] {
	case "rd", "rd-lookup":
		if s.rd == nil {
			return 0, false
		}
	case "provision":
		if s.prov == nil {
			return 0, false
		}
	default:
		return 0, false
	}
	q, f := parseExtraQuery(r.Options())
	if f != nil {
		return replyFailure(w, f), true
	}
	ctx, cancel := context.WithTimeout(w.Conn().Context(), s.cfg.StoreTimeout)
	defer cancel()
	switch {
	case path[0] == "provision" && len(path) == 1:
		if r.Code() != codes.POST {
			return replyText(w, codes.MethodNotAllowed, "POST /provision?key=<provisioning key>&id=<device id>"), true
		}
		return s.provision(ctx, w, q), true
	case path[0] == "rd" && len(path) == 1:
		if r.Code() != codes.POST {
			return replyText(w, codes.MethodNotAllowed, "register with POST /rd?ep=<endpoint>"), true
		}
		return s.rdRegister(ctx, w, r, cs, q), true
	case path[0] == "rd" && len(path) == 2:
		switch r.Code() {
		case codes.POST:
			return s.rdUpdate(ctx, w, r, cs, q, path[1]), true
		case codes.DELETE:
			return s.rdRemove(ctx, w, cs, q, path[1]), true
		}
		return replyText(w, codes.MethodNotAllowed, "update a registration with POST, remove it with DELETE"), true
	case path[0] == "rd-lookup" && len(path) == 2 && (path[1] == "ep" || path[1] == "res"):
		if r.Code() != codes.GET {
			return replyText(w, codes.MethodNotAllowed, "lookups are read with GET"), true
		}
		return s.rdLookup(ctx, w, cs, q, path[1]), true
	}
	return replyText(w, codes.NotFound, "no such resource: the resource directory is /rd, /rd/{id}, /rd-lookup/ep and /rd-lookup/res"), true
}

// rdAuth authenticates a directory request: a device token (for the device named by id=, or
// else by ep=), an API key, or the DTLS identity.
func (s *Server) rdAuth(ctx context.Context, cs *connState, q extraQuery, topic string) (protocols.Identity, *failure) {
	req := request{Topic: topic, Token: q.token, Key: q.key, ID: q.id}
	if req.ID == "" && req.Token != "" {
		req.ID, _ = q.get("ep")
	}
	return s.authenticate(ctx, cs, req)
}

// rdFailure translates the directory's errors.
func rdFailure(err error) *failure {
	switch {
	case errors.Is(err, devices.ErrInvalid):
		return fail(codes.BadRequest, "%v", err)
	case errors.Is(err, devices.ErrTooLarge):
		return fail(codes.RequestEntityTooLarge, "%v", err)
	case errors.Is(err, devices.ErrForbidden), errors.Is(err, devices.ErrExpired), errors.Is(err, devices.ErrExhausted):
		return fail(codes.Forbidden, "%v", err)
	case errors.Is(err, devices.ErrNotFound):
		return fail(codes.NotFound, "%v", err)
	case errors.Is(err, devices.ErrUnauthorized):
		return fail(codes.Unauthorized, "%v", err)
	case errors.Is(err, devices.ErrExists), errors.Is(err, devices.ErrConflict):
		return fail(codeConflict, "%v", err)
	}
	return fail(codes.ServiceUnavailable, "%v", err)
}

// rdBody reads a registration payload: link-format (content-format 40) or none given.
func rdBody(r *pool.Message) (string, *failure) {
	if cf, err := r.Options().GetUint32(message.ContentFormat); err == nil && cf != uint32(message.AppLinkFormat) {
		return "", fail(codes.UnsupportedMediaType, "registrations are application/link-format (content-format 40), not %d", cf)
	}
	body, err := r.ReadBody()
	if err != nil {
		return "", fail(codes.BadRequest, "cannot read the payload: %v", err)
	}
	return string(body), nil
}

func (s *Server) rdRequest(q extraQuery, cs *connState, from protocols.Identity) (devices.RegisterRequest, *failure) {
	req := devices.RegisterRequest{Device: from.DeviceID, Remote: cs.cc.RemoteAddr().String(), Scheme: "coap", Extra: map[string]string{}}
	if cs.isDTLS {
		req.Scheme = "coaps"
	}
	for _, p := range q.params {
		switch p.Name {
		case "ep":
			req.Endpoint = p.Value
		case "d":
			req.Sector = p.Value
		case "base":
			req.Base = p.Value
		case "et":
			req.EndpointType = p.Value
		case "lt":
			lt, err := strconv.Atoi(p.Value)
			if err != nil || lt < 1 {
				return req, fail(codes.BadRequest, "lt=%q: want a lifetime in seconds, at least 1", p.Value)
			}
			req.Lifetime = lt
		default:
			req.Extra[p.Name] = p.Value
		}
	}
	if len(req.Extra) == 0 {
		req.Extra = nil
	}
	return req, nil
}

func (s *Server) rdRegister(ctx context.Context, w writer, r *pool.Message, cs *connState, q extraQuery) codes.Code {
	if _, ok := q.get("ep"); !ok && q.id == "" {
		return replyText(w, codes.BadRequest, "ep=<endpoint name> is required")
	}
	from, f := s.rdAuth(ctx, cs, q, "rd")
	if f != nil {
		return replyFailure(w, f)
	}
	req, f := s.rdRequest(q, cs, from)
	if f != nil {
		return replyFailure(w, f)
	}
	if req.Endpoint == "" {
		req.Endpoint = from.DeviceID // DTLS: the session's device
	}
	body, f := rdBody(r)
	if f != nil {
		return replyFailure(w, f)
	}
	req.Links = &body
	reg, created, err := s.rd.Register(ctx, req)
	if err != nil {
		return replyFailure(w, rdFailure(err))
	}
	code := codes.Changed
	if created {
		code = codes.Created
	}
	return replyText(w, code, "", message.Option{ID: message.LocationPath, Value: []byte("rd")}, message.Option{ID: message.LocationPath, Value: []byte(reg.ID)})
}

func (s *Server) rdUpdate(ctx context.Context, w writer, r *pool.Message, cs *connState, q extraQuery, id string) codes.Code {
	from, f := s.authenticate(ctx, cs, request{Topic: "rd/" + id, Token: q.token, Key: q.key, ID: q.id})
	if f != nil {
		return replyFailure(w, f)
	}
	req, f := s.rdRequest(q, cs, from)
	if f != nil {
		return replyFailure(w, f)
	}
	if req.Endpoint != "" || req.Sector != "" {
		return replyText(w, codes.BadRequest, "ep and d cannot change on an update: register again")
	}
	body, f := rdBody(r)
	if f != nil {
		return replyFailure(w, f)
	}
	req.ID, req.Links = id, &body
	if _, err := s.rd.Update(ctx, req); err != nil {
		return replyFailure(w, rdFailure(err))
	}
	return replyText(w, codes.Changed, "")
}

func (s *Server) rdRemove(ctx context.Context, w writer, cs *connState, q extraQuery, id string) codes.Code {
	from, f := s.authenticate(ctx, cs, request{Topic: "rd/" + id, Token: q.token, Key: q.key, ID: q.id})
	if f != nil {
		return replyFailure(w, f)
	}
	if err := s.rd.Remove(ctx, id, from.DeviceID); err != nil {
		return replyFailure(w, rdFailure(err))
	}
	return replyText(w, codes.Deleted, "")
}

func (s *Server) rdLookup(ctx context.Context, w writer, cs *connState, q extraQuery, kind string) codes.Code {
	if _, f := s.authenticate(ctx, cs, request{Topic: "rd-lookup/" + kind, Token: q.token, Key: q.key, ID: q.id}); f != nil {
		return replyFailure(w, f)
	}
	var page devices.Page
	var filters []linkformat.Filter
	for _, p := range q.params {
		switch p.Name {
		case "page", "count":
			n, err := strconv.Atoi(p.Value)
			if err != nil || n < 0 {
				return replyText(w, codes.BadRequest, fmt.Sprintf("%s=%q: want a whole number ≥ 0", p.Name, p.Value))
			}
			if p.Name == "page" {
				page.Page = n
			} else {
				page.Count = n
			}
		default:
			filters = append(filters, p)
		}
	}
	if page.Page > 0 && page.Count == 0 {
		return replyText(w, codes.BadRequest, "page= needs count=")
	}
	var links []linkformat.Link
	if kind == "ep" {
		links = s.rd.LookupEndpoints(filters, page)
	} else {
		links = s.rd.LookupResources(filters, page)
	}
	body := linkformat.Format(links)
	if err := w.SetResponse(codes.Content, message.AppLinkFormat, bytes.NewReader([]byte(body))); err != nil {
		return codes.Content
	}
	return codes.Content
}

// provision answers POST /provision?key=...&id=...: 2.01 with {"id","token"} (JSON), or the
// refusal with its reason.
func (s *Server) provision(ctx context.Context, w writer, q extraQuery) codes.Code {
	if q.key == "" || q.id == "" {
		return replyText(w, codes.BadRequest, "POST /provision?key=<provisioning key>&id=<device id>")
	}
	token, err := s.prov.Provision(ctx, q.key, q.id)
	if err != nil {
		dev := ""
		if devices.ValidID(q.id) {
			dev = q.id
		}
		s.in.DeadLetterAuth(ctx, protocolName, dev, "provision", "coap provisioning: "+err.Error())
		return replyFailure(w, rdFailure(err))
	}
	body, _ := json.Marshal(map[string]string{"id": q.id, "token": token})
	if err := w.SetResponse(codes.Created, message.AppJSON, bytes.NewReader(body)); err != nil {
		return codes.Created
	}
	return codes.Created
}

// rdLinks are what /.well-known/core adds for the resource directory (RFC 9176 §4.3).
var rdLinks = []link{
	{"/rd", "core.rd", "", "40", false, "resource directory: POST ?ep=<name> with link-format"},
	{"/rd-lookup/ep", "core.rd-lookup-ep", "", "40", false, "endpoint lookup"},
	{"/rd-lookup/res", "core.rd-lookup-res", "", "40", false, "resource lookup"},
}

// observed tells the command tracker that a device observes one of its command topics.
func (s *Server) observed(from protocols.Identity, req request) {
	if s.tracker != nil && !from.App && req.IsDevice && req.Device.Kind == protocols.KindCommand && req.Device.DeviceID == from.DeviceID {
		s.tracker.Subscribed(from.DeviceID, req.Topic)
	}
}

// notified tells the command tracker that a device acknowledged a command notification.
func (s *Server) notified(o *observer, payload []byte) {
	if s.tracker == nil || o.device == "" {
		return
	}
	if dt, ok := protocols.ParseDeviceTopic(o.topic); ok && dt.Kind == protocols.KindCommand && dt.DeviceID == o.device {
		s.tracker.Delivered(o.device, o.topic, payload)
	}
}
