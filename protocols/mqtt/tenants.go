package mqtt

import (
	"context"
	"errors"
	"net"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tributary-iot/tributary/audit"
	"github.com/tributary-iot/tributary/auth"
	"github.com/tributary-iot/tributary/protocols"
	"github.com/tributary-iot/tributary/protocols/admission"
)

// Scoped application keys and tenants over MQTT. An application logs in with username "app"
// and an API key as password; with the admin key it may do everything, as before. With a
// scoped key (when the Authenticator is a protocols.AppAuthorizer) subscribing needs
// streams:read, publishing commands or desired state devices:write (other topics
// streams:write), and a key confined to a tenant only reaches that tenant's devices: its
// subscriptions are checked when made and every delivery is checked again by topic (mochi asks
// OnACLCheck per subscriber and message), so a wildcard subscription never carries another
// tenant's messages. The key is looked up again on every check, so a revoked key loses its
// rights — and its connection — on every instance as soon as the revocation reaches it.

// connectApp checks an application's key and remembers its principal for the connection.
func (h *hook) connectApp(ctx context.Context, cl *mochi.Client, pk packets.Packet) error {
	az, ok := h.s.auth.(protocols.AppAuthorizer)
	if !ok {
		if err := h.s.auth.AuthenticateApp(ctx, string(pk.Connect.Password)); err != nil {
			return errors.New("wrong API key")
		}
		h.s.adm.appBuckets.Store(cl, admission.APIKeyBucket(string(pk.Connect.Password)))
		return nil
	}
	p, err := az.AuthorizeApp(string(pk.Connect.Password))
	if err != nil {
		return errors.New("wrong API key")
	}
	h.s.adm.appBuckets.Store(cl, admission.APIKeyBucket(string(pk.Connect.Password)))
	if p.KeyID != "" {
		h.s.apps.Store(cl, p.KeyID)
	}
	return nil
}

// appKey returns the current principal of an application client: nil for the admin key,
// and false when its scoped key was revoked or has expired (the client is then disconnected).
func (s *Server) appKey(cl *mochi.Client) (*auth.Principal, bool) {
	v, ok := s.apps.Load(cl)
	if !ok {
		return nil, true
	}
	p, ok := s.auth.(protocols.AppAuthorizer).CurrentKey(v.(string))
	if !ok {
		s.audit(cl, audit.Event{Type: audit.TypeDenied, Outcome: audit.Failure, Principal: "key:" + v.(string), Reason: "API key revoked or expired: connection closed"})
		cl.Stop(packets.ErrNotAuthorized)
		return nil, false
	}
	return &p, true
}

// identity is who a client is, with an application's scoped key.
func (s *Server) identity(cl *mochi.Client) protocols.Identity {
	id := identify(cl.Properties.Username)
	if id.App {
		p, ok := s.appKey(cl)
		if !ok {
			p = &auth.Principal{Name: "revoked"} // no scopes: every publish is refused
		}
		id.Key = p
	}
	return id
}

// appMay decides an application's subscription (or a delivery to it).
func (s *Server) appMay(cl *mochi.Client, topic string) bool {
	p, ok := s.appKey(cl)
	if !ok {
		return false
	}
	if p == nil {
		return true
	}
	may, _ := protocols.AppMaySubscribe(*p, topic, s.auth.(protocols.AppAuthorizer).TenantOf)
	return may
}

// auditRefusedSubscriptions records the filters of a SUBSCRIBE refused as not authorized
// (deliveries refused by the same check are not recorded: they would flood the log).
func (s *Server) auditRefusedSubscriptions(cl *mochi.Client, pk packets.Packet, reasonCodes []byte) {
	for i, f := range pk.Filters {
		if i >= len(reasonCodes) || reasonCodes[i] != packets.ErrNotAuthorized.Code {
			continue
		}
		e := audit.Event{Type: audit.TypeDenied, Outcome: audit.Failure, Principal: "device:" + clip(string(cl.Properties.Username)), Object: "subscribe " + clip(f.Filter)}
		if id := identify(cl.Properties.Username); id.App {
			e.Principal = "app"
			if p, ok := s.appKey(cl); ok && p != nil {
				e.Principal, e.Tenant = p.ID(), p.Tenant
				_, e.Reason = protocols.AppMaySubscribe(*p, f.Filter, s.auth.(protocols.AppAuthorizer).TenantOf)
			}
		}
		s.audit(cl, e)
	}
}

// auditLogin records a CONNECT's outcome.
func (s *Server) auditLogin(cl *mochi.Client, user string, err error) {
	e := audit.Event{Type: audit.TypeLogin, Outcome: audit.Success, Principal: "device:" + clip(user)}
	switch user {
	case protocols.AppUsername:
		e.Principal = "app"
		if p, ok := s.appKey(cl); ok && p != nil {
			e.Principal, e.Tenant = p.ID(), p.Tenant
		}
	case "":
		e.Principal = ""
	}
	if az, ok := s.auth.(protocols.AppAuthorizer); ok && user != protocols.AppUsername && err == nil {
		e.Tenant = az.TenantOf(user)
	}
	if err != nil {
		e.Outcome, e.Reason = audit.Failure, err.Error()
	}
	s.audit(cl, e)
}

// audit records e with the client's address, when the Authenticator keeps an audit log.
func (s *Server) audit(cl *mochi.Client, e audit.Event) {
	a, ok := s.auth.(protocols.Auditor)
	if !ok {
		return
	}
	e.Protocol = protocolName
	e.Source = cl.Net.Remote
	if _, _, err := net.SplitHostPort(e.Source); err != nil && cl.Net.Conn != nil {
		e.Source = cl.Net.Conn.RemoteAddr().String()
	}
	a.Audit(e)
}
