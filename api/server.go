package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/web"
)

// DeviceStore is the device registry as the API uses it. *devices.Registry satisfies it.
type DeviceStore interface {
	Create(ctx context.Context, d devices.Device) (devices.Device, string, error)
	Get(id string) (devices.Device, error)
	List(f devices.Filter) ([]devices.Device, string)
	Update(ctx context.Context, id string, p devices.Patch) (devices.Device, error)
	Delete(ctx context.Context, id string) error
	RotateToken(ctx context.Context, id string) (string, error)
}

// MessageStore reads and writes the hub's streams. *streams.Bus satisfies it.
type MessageStore interface {
	Publish(ctx context.Context, env *streams.Envelope) (uint64, error)
	Latest(ctx context.Context, filters []string, limit int, before uint64) (streams.Page, error)
	DeadLetters(ctx context.Context, device string, limit int, before uint64) (streams.Page, error)
	Subscribe(ctx context.Context, sub streams.Subscription, fn func(*streams.Envelope)) error
}

// Deps are what the handlers call.
type Deps struct {
	Devices  DeviceStore
	Messages MessageStore
	// APIKey is the admin key: every scope, every tenant.
	APIKey string
	// Keys are the scoped API keys (nil: only the admin key is accepted).
	Keys APIKeyStore
	// Tenants, when set, serves /api/v1/tenants and checks device quotas.
	Tenants TenantStore
	// TenantUses count what a tenant owns besides devices and API keys (rules, replays), so
	// that DELETE /api/v1/tenants/{name} refuses while it owns anything.
	TenantUses []TenantUse
	// Audit records logins and denials, and serves /api/v1/audit when it can be read.
	Audit Auditor
	// Ready returns nil when the hub is ready to serve, else what is not ready.
	Ready func() error
	// ReadyDetail adds component states (e.g. storage lag) to /readyz.
	ReadyDetail func() map[string]any
	// Status returns the IDs of devices that are online (true) or offline (false); nil when
	// liveness is not tracked.
	Status func(online bool) map[string]bool
	// Extra registers further routes (rules, replays, ...) on the same mux with the same auth.
	Extra []func(r *Router)
}

// Server holds the routes.
type Server struct {
	deps Deps
	log  *slog.Logger
	mux  *http.ServeMux
	// liveCtx ends every live stream when liveStop is called (CloseLive).
	liveCtx  context.Context
	liveStop context.CancelFunc
	// hooked holds the *http.Server values whose Shutdown calls CloseLive.
	hooked sync.Map
	// registered lists every authenticated route pattern (TestEveryRouteHasAScope walks it).
	registered []string
}

// Router lets other packages' handlers register on the API with authentication applied.
type Router struct{ s *Server }

// Handle registers an authenticated API route ("GET /api/v1/rules", ...). The route must have
// a row in routeAccess (api/scopes.go) naming its scope; without one Handle panics.
func (r *Router) Handle(pattern string, h http.HandlerFunc) { r.s.handle(pattern, h) }

// New builds the API.
func New(deps Deps, log *slog.Logger) *Server {
	s := &Server{deps: deps, log: log.With("component", "api"), mux: http.NewServeMux()}
	s.liveCtx, s.liveStop = context.WithCancel(context.Background())
	s.routes()
	return s
}

// Handler is the root handler.
func (s *Server) Handler() http.Handler { return s.mux }

func (s *Server) routes() {
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.Handle("GET /metrics", promhttp.Handler())

	s.handle("POST /api/v1/devices", s.createDevice)
	s.handle("GET /api/v1/devices", s.listDevices)
	s.handle("GET /api/v1/devices/{id}", s.getDevice)
	s.handle("PATCH /api/v1/devices/{id}", s.patchDevice)
	s.handle("DELETE /api/v1/devices/{id}", s.deleteDevice)
	s.handle("POST /api/v1/devices/{id}/token", s.rotateToken)
	s.handle("GET /api/v1/devices/{id}/messages", s.deviceMessages)
	s.handle("GET /api/v1/deadletters", s.deadLetters)
	// Live streams also take a browser token as ?access_token= (EventSource and WebSocket
	// cannot send headers); only API keys mint tokens.
	s.handle("GET /api/v1/stream", s.stream)
	s.handle("GET /api/v1/ws", s.websocket)
	s.handle("POST /api/v1/tokens", s.issueToken)
	s.securityRoutes()
	for _, extra := range s.deps.Extra {
		extra(&Router{s})
	}
	s.mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	s.mux.Handle("/", web.Handler()) // the dashboard
}

// handle registers an authenticated route with the scope routeAccess gives it.
func (s *Server) handle(pattern string, h http.HandlerFunc) {
	s.mux.Handle(pattern, s.guard(pattern, accessFor(pattern), h))
	s.registered = append(s.registered, pattern)
}

// Routes lists every authenticated route pattern registered.
func (s *Server) Routes() []string { return slices.Clone(s.registered) }

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	body := map[string]any{"status": "ready"}
	if s.deps.ReadyDetail != nil {
		if d := s.deps.ReadyDetail(); len(d) > 0 {
			body["components"] = d
		}
	}
	if s.deps.Ready != nil {
		if err := s.deps.Ready(); err != nil {
			body["status"], body["error"] = "not ready", err.Error()
			writeJSON(w, http.StatusServiceUnavailable, body)
			return
		}
	}
	writeJSON(w, http.StatusOK, body)
}

// writeJSON writes v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// writeError writes {"error": msg}.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// maxBody caps request bodies.
const maxBody = 1 << 20

// decodeJSON reads one JSON value into v, refusing unknown fields and trailing data, with errors
// that say where the body is wrong.
func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		var tooBig *http.MaxBytesError
		switch {
		case errors.Is(err, io.EOF):
			return errors.New("request body is empty; want a JSON object")
		case errors.Is(err, io.ErrUnexpectedEOF):
			return errors.New("request body is not valid JSON: it ends too early")
		case errors.As(err, &syn):
			return fmt.Errorf("request body is not valid JSON at byte %d: %v", syn.Offset, err)
		case errors.As(err, &typ):
			return fmt.Errorf("field %q: got JSON %s, want %s", typ.Field, typ.Value, typ.Type)
		case errors.As(err, &tooBig):
			return fmt.Errorf("request body is larger than %d bytes", maxBody)
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			return fmt.Errorf("unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
		}
		return fmt.Errorf("request body: %v", err)
	}
	if dec.More() {
		return errors.New("request body has data after the JSON value")
	}
	return nil
}
