package coap

import (
	"context"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/tributary-iot/tributary/audit"
	"github.com/tributary-iot/tributary/protocols"
)

// Scoped application keys and tenants over CoAP. An application authenticates with ?key=; a
// scoped key (when the Authenticator is a protocols.AppAuthorizer) may read or observe with
// streams:read and publish as the ingest pipeline allows (devices:write for commands and
// desired state, streams:write otherwise), and a key confined to a tenant reaches only its
// tenant's devices: another tenant's device topic answers 4.04, as an unknown one would.
// Observations re-check their key before each notification, so a revoked key's observations
// end within a second. The DTLS application identity "app" is the admin key only.

// appIdentity authenticates an application's ?key=.
func (s *Server) appIdentity(ctx context.Context, cs *connState, req request) (protocols.Identity, *failure) {
	az, ok := s.auth.(protocols.AppAuthorizer)
	if !ok {
		if err := s.auth.AuthenticateApp(ctx, req.Key); err != nil {
			return protocols.Identity{}, s.refuse(ctx, "", req.Topic, "invalid API key")
		}
		return protocols.Identity{App: true}, nil
	}
	p, err := az.AuthorizeApp(req.Key)
	if err != nil {
		return protocols.Identity{}, s.refuse(ctx, "", req.Topic, "invalid API key")
	}
	id := protocols.Identity{App: true}
	if p.KeyID != "" {
		id.Key = &p
	}
	s.audit(ctx, audit.Event{Type: audit.TypeLogin, Outcome: audit.Success, Principal: p.ID(), Tenant: p.Tenant})
	return id, nil
}

// appMayRead checks a scoped key's GET or observation of req.Topic.
func (s *Server) appMayRead(ctx context.Context, from protocols.Identity, req request) *failure {
	if !from.App || from.Key == nil {
		return nil
	}
	may, why := protocols.AppMaySubscribe(*from.Key, req.Topic, s.auth.(protocols.AppAuthorizer).TenantOf)
	if may {
		return nil
	}
	s.audit(ctx, audit.Event{Type: audit.TypeDenied, Outcome: audit.Failure, Principal: from.Key.ID(), Tenant: from.Key.Tenant, Object: "read " + req.Topic, Reason: why})
	if !from.Key.Allows("streams:read") {
		return fail(codes.Forbidden, "%s", why)
	}
	return fail(codes.NotFound, "%s", why)
}

// keyCurrent reports whether an observation's key is still valid ("" is the admin key or a
// device).
func (s *Server) keyCurrent(key string) bool {
	if key == "" {
		return true
	}
	az, ok := s.auth.(protocols.AppAuthorizer)
	if !ok {
		return true
	}
	_, ok = az.CurrentKey(key)
	return ok
}

// keyOf is the scoped key ID of an identity ("" for the admin key and devices).
func keyOf(id protocols.Identity) string {
	if id.Key == nil {
		return ""
	}
	return id.Key.KeyID
}

type sourceKey struct{}

// withSource notes the peer's address in ctx for the audit log.
func withSource(ctx context.Context, cs *connState) context.Context {
	return context.WithValue(ctx, sourceKey{}, cs)
}

// audit records e with the peer's address (when ctx has it) and the protocol.
func (s *Server) audit(ctx context.Context, e audit.Event) {
	a, ok := s.auth.(protocols.Auditor)
	if !ok {
		return
	}
	if e.Protocol == "" {
		e.Protocol = protocolName
	}
	if cs, ok := ctx.Value(sourceKey{}).(*connState); ok {
		e.Source = cs.cc.RemoteAddr().String()
		if cs.isDTLS {
			e.Protocol = "coaps"
		}
	}
	a.Audit(e)
}

// auditDevice records a device's successful authentication.
func (s *Server) auditDevice(ctx context.Context, deviceID string) {
	if a, ok := s.auth.(protocols.AppAuthorizer); ok {
		s.audit(ctx, audit.Event{Type: audit.TypeLogin, Outcome: audit.Success, Principal: "device:" + deviceID, Tenant: a.TenantOf(deviceID)})
	}
}
