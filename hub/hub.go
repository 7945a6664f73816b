// Package hub is the composition root: it builds every component from Config, runs them under
// one errgroup, serves the HTTP API, and stops them in order when its context ends.
package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tributary-iot/tributary/api"
	"github.com/tributary-iot/tributary/audit"
	"github.com/tributary-iot/tributary/auth"
	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/protocols"
	"github.com/tributary-iot/tributary/protocols/admission"
	"github.com/tributary-iot/tributary/protocols/coap"
	"github.com/tributary-iot/tributary/protocols/mqtt"
	"github.com/tributary-iot/tributary/rules"
	"github.com/tributary-iot/tributary/simulator"
	"github.com/tributary-iot/tributary/simulator/fleet"
	"github.com/tributary-iot/tributary/simulator/replay"
	"github.com/tributary-iot/tributary/simulator/scenario"
	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/lease"
	"github.com/tributary-iot/tributary/tlsconf"
	"github.com/tributary-iot/tributary/tsdb"
)

// Hub is one running hubd.
type Hub struct {
	cfg    Config
	log    *slog.Logger
	apiKey string

	bus      *streams.Bus
	registry *devices.Registry
	ingest   *protocols.Ingest
	mqtt     *mqtt.Server
	coap     *coap.Server
	replays  *replay.Manager
	sims     *fleet.Manager
	// influx writes telemetry to InfluxDB; nil when no --influx-url is set.
	influx *tsdb.Writer
	// rules runs the windowed rules; ruleInflux writes their results to InfluxDB (nil
	// without --influx-url).
	rules      *rules.Manager
	ruleInflux *tsdb.Writer
	// leases gives each rule to one instance of those sharing NATS.
	leases *lease.Store
	// retention purges tenants' messages past their retention quota from the IOT stream.
	retention *streams.Retainer

	httpLn net.Listener
	http   *http.Server

	// tls holds the certificate files' current contents; nil without --tls-cert. httpsLn and
	// https serve the same handler as http over TLS (nil when off).
	tls     *tlsconf.Store
	httpsLn net.Listener
	https   *http.Server

	ready chan struct{}

	// devmgr is device management: liveness, shadows, commands, provisioning, discovery.
	devmgr *devices.Manager

	// keys are the scoped API keys, tenants their owners, audit the security log.
	api     *api.Server
	keys    *auth.Keys
	tenants *auth.Tenants
	audit   *audit.Log
	// admission is admission control: rates, connection limits, auth throttling.
	admission *admission.Controller
	sharing   *rateSharing // splits tenants' and API keys' rates between instances
}

// New builds the hub: it starts (or connects to) NATS, opens the registry and binds the HTTP
// listener, so configuration errors surface here. Run starts serving.
func New(ctx context.Context, cfg Config, log *slog.Logger) (_ *Hub, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	h := &Hub{cfg: cfg, log: log, ready: make(chan struct{})}
	defer func() {
		if err != nil {
			h.close()
		}
	}()
	if h.apiKey, err = loadOrCreateAPIKey(cfg.APIKey, cfg.DataDir, log); err != nil {
		return nil, err
	}
	h.bus, err = streams.New(ctx, streams.Config{
		URL:        cfg.NATSURL,
		StoreDir:   filepath.Join(cfg.DataDir, "jetstream"),
		ListenAddr: cfg.NATSAddr,
		Retention:  cfg.Retention,
		Replicas:   cfg.Replicas,
	}, log)
	if err != nil {
		return nil, err
	}
	replicas := h.bus.Replicas() // 0 in cfg: 3 on a NATS cluster, else 1
	if h.registry, err = devices.New(ctx, h.bus.JetStream(), devices.Config{Replicas: replicas}, log); err != nil {
		return nil, err
	}
	if h.devmgr, err = devices.NewManager(ctx, h.bus.JetStream(), h.registry, h.bus, devices.ManagerConfig{Replicas: replicas}, log); err != nil {
		return nil, err
	}
	if err := h.newSecurity(ctx, replicas); err != nil {
		return nil, err
	}
	h.ingest = protocols.NewIngest(h.bus, cfg.MaxPayload, log)
	h.ingest.SetTenants(h.registry.TenantOf)
	h.ingest.SetMaxTopicLevels(cfg.MaxTopicLevels)
	if h.admission, err = admission.New(cfg.admissionConfig(), deviceProfiles{h.registry, h.devmgr.Types, h.tenants}, log); err != nil {
		return nil, err
	}
	creds := credentials{devices: h.registry, apiKey: h.apiKey, keys: h.keys, audit: h.audit}
	mqttCfg := mqtt.Config{Addr: cfg.MQTTAddr, WSAddr: cfg.MQTTWSAddr}
	if cfg.tlsConfig().Enabled() {
		if h.tls, err = tlsconf.New(cfg.tlsConfig(), log); err != nil {
			return nil, err
		}
		mqttCfg.TLSAddr, mqttCfg.WSSAddr, mqttCfg.TLSConfig = cfg.MQTTSAddr, cfg.MQTTWSSAddr, h.tls.DeviceConfig()
	}
	if h.mqtt, err = mqtt.New(mqttCfg, h.ingest, creds, h.bus, h.devmgr, log); err != nil {
		return nil, err
	}
	coapCfg := coap.Config{Addr: cfg.CoAPAddr, DTLSAddr: cfg.CoAPSAddr}
	if h.tls != nil {
		coapCfg.Certs = h.tls // certificate DTLS next to PSK on --coaps-addr
	}
	if h.coap, err = coap.New(coapCfg, h.ingest, creds, h.bus, h.devmgr, log); err != nil {
		return nil, err
	}
	h.mqtt.SetAdmission(h.admission)
	h.coap.SetAdmission(h.admission)
	// Replays, scenarios and virtual fleets (simulator/*).
	resolver := simulator.NewResolver(h.bus.JetStream(), h.registry, nil)
	scenarios, err := scenario.New(ctx, h.bus.Conn(), scenario.Config{Replicas: replicas}, resolver, log)
	if err != nil {
		return nil, err
	}
	if h.replays, err = replay.New(ctx, h.bus.Conn(), replay.Config{Replicas: replicas}, resolver, log); err != nil {
		return nil, err
	}
	if h.sims, err = fleet.NewManager(ctx, h.bus.JetStream(), fleet.ManagerConfig{Replicas: replicas, Endpoints: h.deviceEndpoints},
		fleet.RegistryProvisioner{Registry: h.registry}, log); err != nil {
		return nil, err
	}
	// Time series: the InfluxDB writer when configured; queries from InfluxDB or, without
	// it, from the stream.
	influxCfg := tsdb.Config{URL: cfg.InfluxURL, Token: cfg.InfluxToken, Org: cfg.InfluxOrg, Bucket: cfg.InfluxBucket}
	if cfg.InfluxURL != "" {
		if h.influx, err = tsdb.NewWriter(h.bus, influxCfg, tsdb.TelemetryMapping(h.registry, ""), log); err != nil {
			return nil, err
		}
	}
	// Rules (rules/): definitions and state in KV, results on rules/<name>/results.
	if h.rules, err = rules.New(ctx, h.bus, h.registry, rules.Config{Replicas: replicas}, log); err != nil {
		return nil, err
	}
	if h.leases, err = lease.Open(ctx, h.bus.JetStream(), lease.Config{TTL: cfg.LeaseTTL, Replicas: replicas}, log); err != nil {
		return nil, err
	}
	h.rules.UseLeases(h.leases)
	h.sharing = &rateSharing{nc: h.bus.Conn(), adm: h.admission, self: h.leases.Holder(), interval: time.Second, log: log.With("component", "admission")}
	h.retention = streams.NewRetainer(h.bus, cfg.RetentionInterval, h.tenantRetention, log)
	h.retention.UseLeases(h.leases)
	// Replays and simulations judge whether another instance still runs a job by the lease
	// store's live members, not by heartbeat times read against this host's clock.
	h.replays.UseMembers(h.leases.Holder(), h.liveMembers)
	h.sims.UseMembers(h.leases.Holder(), h.liveMembers)
	if cfg.InfluxURL != "" {
		if h.ruleInflux, err = tsdb.NewWriter(h.bus, influxCfg, rules.InfluxMapping(""), log); err != nil {
			return nil, err
		}
	}
	querier, err := tsdb.NewQuerier(influxCfg, h.bus, log)
	if err != nil {
		return nil, err
	}
	apiServer := api.New(api.Deps{
		Devices:    h.devmgr,
		Status:     h.devmgr.StatusSet,
		Messages:   h.bus,
		APIKey:     h.apiKey,
		Keys:       h.keys,
		Tenants:    h.tenants,
		TenantUses: []api.TenantUse{h.tenantRules, h.tenantReplays},
		Audit:      h.audit,
		Ready:      h.readiness,
		Extra: []func(*api.Router){api.ReplayRoutes(h.replays, scenarios, log), api.SimulationRoutes(h.sims, log),
			api.TelemetryRoutes(querier, h.registry, log), api.RuleRoutes(h.rules, log), api.CanaryRoutes(h.rules, log),
			api.BacktestRoutes(rules.NewBacktester(h.rules, resolver), log),
			deviceRoutes(h.devmgr, h.mqtt, h.coap, log)},
		ReadyDetail: h.readyDetail,
	}, log)
	h.api = apiServer
	if h.httpLn, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("http-addr %s: %w", cfg.HTTPAddr, err)
	}
	h.http = &http.Server{Handler: api.Limit(apiServer.Handler(), h.admission), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	if h.tls != nil && cfg.HTTPSAddr != "" {
		ln, err := net.Listen("tcp", cfg.HTTPSAddr)
		if err != nil {
			return nil, fmt.Errorf("https-addr %s: %w", cfg.HTTPSAddr, err)
		}
		h.httpsLn = tlsconf.NewListener(ln, h.tls.ServerConfig(), "https", 10*time.Second, log)
		h.https = &http.Server{Handler: h.http.Handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: h.http.ErrorLog}
	}
	return h, nil
}

// Run serves until ctx ends, then stops every component and closes NATS last, so in-flight
// QoS 1 and confirmable messages are either stored and acknowledged or not acknowledged.
func (h *Hub) Run(ctx context.Context) error {
	defer h.close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return h.registry.Run(gctx) })
	g.Go(func() error { return h.devmgr.Run(gctx) })
	g.Go(func() error { return h.keys.Run(gctx) })
	g.Go(func() error { return h.tenants.Run(gctx) })
	g.Go(func() error { return h.audit.Run(gctx) })
	g.Go(func() error { return h.mqtt.Run(gctx) })
	g.Go(func() error { return h.coap.Run(gctx) })
	g.Go(func() error { return h.replays.Run(gctx) })
	g.Go(func() error { return h.sims.Run(gctx) })
	if h.influx != nil {
		g.Go(func() error { return h.influx.Run(gctx) })
	}
	g.Go(func() error { return h.leases.Run(gctx) })
	g.Go(func() error { return h.sharing.Run(gctx) })
	g.Go(func() error { return h.rules.Run(gctx) })
	g.Go(func() error { return h.retention.Run(gctx) })
	if h.ruleInflux != nil {
		g.Go(func() error { return h.ruleInflux.Run(gctx) })
	}
	g.Go(func() error {
		err := h.http.Serve(h.httpLn)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("http: %w", err)
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return h.http.Shutdown(sctx)
	})
	if h.tls != nil {
		g.Go(func() error { return h.tls.Run(gctx) })
	}
	if h.https != nil {
		g.Go(func() error {
			err := h.https.Serve(h.httpsLn)
			if errors.Is(err, http.ErrServerClosed) {
				return nil
			}
			return fmt.Errorf("https: %w", err)
		})
		g.Go(func() error {
			<-gctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return h.https.Shutdown(sctx)
		})
	}
	g.Go(func() error {
		for _, c := range []<-chan struct{}{h.mqtt.Ready(), h.coap.Ready()} {
			select {
			case <-c:
			case <-gctx.Done():
				return nil
			}
		}
		close(h.ready)
		h.log.Info("hub ready", "http", h.HTTPAddr(), "https", h.HTTPSAddr(), "mqtt", h.mqtt.Addr(), "mqtt_ws", h.mqtt.WSAddr(),
			"mqtts", h.mqtt.TLSAddr(), "mqtt_wss", h.mqtt.WSSAddr(),
			"coap", h.coap.Addr(), "coaps", h.coap.DTLSAddr(), "nats", h.bus.ClientURL())
		return nil
	})
	err := g.Wait()
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		err = nil // a component noticed the stop while starting: that is a stop, not a failure
	}
	h.log.Info("hub stopped")
	return err
}

func (h *Hub) close() {
	if h.httpLn != nil {
		h.httpLn.Close()
	}
	if h.httpsLn != nil {
		h.httpsLn.Close()
	}
	if h.bus != nil {
		h.bus.Close()
	}
}

// deviceEndpoints are the addresses virtual fleets connect to, once the listeners accept.
func (h *Hub) deviceEndpoints() (fleet.Endpoints, error) {
	select {
	case <-h.ready:
		return fleet.Endpoints{MQTT: h.mqtt.Addr(), CoAP: h.coap.Addr()}, nil
	default:
		return fleet.Endpoints{}, errors.New("the hub is still starting")
	}
}

// Ready is closed once every listener accepts connections.
func (h *Hub) Ready() <-chan struct{} { return h.ready }

func (h *Hub) readiness() error {
	if err := h.bus.Ready(); err != nil {
		return err
	}
	select {
	case <-h.ready:
		return nil
	default:
		return errors.New("protocol listeners are starting")
	}
}

// readyDetail is shown on /readyz: the state of components that may lag without making the hub
// unready (ingest goes on while InfluxDB is down; the writer catches up).
func (h *Hub) readyDetail() map[string]any {
	d := map[string]any{}
	if h.influx != nil {
		d["influxdb_writer"] = h.influx.Status()
	}
	d["leases"] = h.leaseDetail()
	if h.tls != nil {
		d["tls"] = h.tls.Status()
	}
	return d
}

// Addresses, valid after Ready.
func (h *Hub) HTTPAddr() string   { return h.httpLn.Addr().String() }
func (h *Hub) MQTTAddr() string   { return h.mqtt.Addr() }
func (h *Hub) MQTTWSAddr() string { return h.mqtt.WSAddr() }
func (h *Hub) CoAPAddr() string   { return h.coap.Addr() }
func (h *Hub) CoAPSAddr() string  { return h.coap.DTLSAddr() }
func (h *Hub) NATSURL() string    { return h.bus.ClientURL() }

// TLS addresses, valid after Ready; "" when off.
func (h *Hub) MQTTSAddr() string   { return h.mqtt.TLSAddr() }
func (h *Hub) MQTTWSSAddr() string { return h.mqtt.WSSAddr() }
func (h *Hub) HTTPSAddr() string {
	if h.httpsLn == nil {
		return ""
	}
	return h.httpsLn.Addr().String()
}

// APIKey is the admin key in force.
func (h *Hub) APIKey() string { return h.apiKey }

// LeaseDetail is /readyz's "leases": which instance this is, the rules it runs, and the live
// instances sharing the leases.
type LeaseDetail struct {
	Instance string   `json:"instance"`
	Rules    []string `json:"rules"`
	Members  []string `json:"members"`
	TTL      string   `json:"ttl"`
}

func (h *Hub) leaseDetail() LeaseDetail {
	d := LeaseDetail{Instance: h.leases.Holder(), Rules: []string{}, Members: h.leases.Members(), TTL: h.leases.TTL().String()}
	for _, n := range h.leases.Held() {
		if r, ok := strings.CutPrefix(n, "rule."); ok {
			d.Rules = append(d.Rules, r)
		}
	}
	return d
}

// Instance is this hub's name in leases and rule stats ("owner").
func (h *Hub) Instance() string { return h.leases.Holder() }

// liveMembers lists the live hub instances once the lease store has loaded. A list without this
// instance is incomplete (the store is re-reading the bucket after losing NATS) and counts as
// unknown, so that no job is taken from an owner that is alive.
func (h *Hub) liveMembers() ([]string, bool) {
	select {
	case <-h.leases.Ready():
	default:
		return nil, false
	}
	live := h.leases.Members()
	return live, slices.Contains(live, h.leases.Holder())
}

// tenantRules counts the rules (canaries included) tenant owns, for deleting a tenant.
func (h *Hub) tenantRules(ctx context.Context, tenant string) (string, string, int, error) {
	rs, err := h.rules.List(ctx)
	n := 0
	for i := range rs {
		if rs[i].TenantOf() == tenant {
			n++
		}
	}
	return "rule or canary", "rules and canaries", n, err
}

// tenantReplays counts the replay jobs (finished ones included) tenant owns.
func (h *Hub) tenantReplays(ctx context.Context, tenant string) (string, string, int, error) {
	jobs, err := h.replays.List(ctx)
	n := 0
	for _, j := range jobs {
		if auth.Normalize(j.Request.Tenant) == tenant {
			n++
		}
	}
	return "replay", "replays", n, err
}

// tenantRetention lists each tenant with a retention quota and its devices, for the Retainer.
func (h *Hub) tenantRetention() []streams.TenantRetention {
	var out []streams.TenantRetention
	for _, t := range h.tenants.List() {
		if t.Quotas.Retention <= 0 {
			continue
		}
		devs, _ := h.registry.List(devices.Filter{Tenant: t.Name})
		ids := make([]string, len(devs))
		for i, d := range devs {
			ids[i] = d.ID
		}
		out = append(out, streams.TenantRetention{Tenant: t.Name, Retention: time.Duration(t.Quotas.Retention), Devices: ids})
	}
	return out
}
