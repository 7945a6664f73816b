package devices

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/devices/linkformat"
	"github.com/tributary-iot/tributary/streams"
)

// DirectoryBucket holds CoRE Resource Directory registrations (RFC 9176), keyed by
// registration ID.
const DirectoryBucket = "rd"

// Resource Directory limits and defaults (RFC 9176 §5: lt defaults to 90000 s).
const (
	DefaultRDLifetime = 90000 * time.Second
	MaxEndpointName   = 63
	MaxRDLinks        = 16 << 10 // bytes of link-format per registration
)

// DirectoryConfig tunes the resource directory.
type DirectoryConfig struct {
	// MaxRegistrations caps registrations in all (default 100000).
	MaxRegistrations int `yaml:"max_registrations" json:"max_registrations"`
	// SweepInterval is how often expired registrations are removed (default 1s; lookups never
	// show expired ones).
	SweepInterval time.Duration `yaml:"sweep_interval" json:"sweep_interval"`
}

// Registration is one endpoint's entry in the resource directory.
type Registration struct {
	// ID names the registration resource, /rd/{id}.
	ID       string `json:"id"`
	Endpoint string `json:"ep"`
	Sector   string `json:"d,omitempty"`
	// Base is the URI relative references in Links resolve against (default: the registering
	// peer's address, coap://host:port).
	Base         string `json:"base"`
	EndpointType string `json:"et,omitempty"`
	// Lifetime in seconds; the registration expires that long after its last update.
	Lifetime int `json:"lt"`
	// Extra holds further endpoint attributes given at registration (RFC 9176 extra-attrs).
	Extra map[string]string `json:"extra,omitempty"`
	Links string            `json:"links"`
	// Device is the device that registered (empty when an application registered on behalf
	// of the endpoint); only it or an application may update or remove the registration.
	Device       string    `json:"device,omitempty"`
	RegisteredAt time.Time `json:"registered_at"`
	UpdatedAt    time.Time `json:"updated_at"`
	ExpiresAt    time.Time `json:"expires_at"`
}

// Location is the registration resource's path.
func (r Registration) Location() string { return "/rd/" + r.ID }

// RegisterRequest is a registration (POST /rd) or, with ID set, an update (POST /rd/{id}).
type RegisterRequest struct {
	ID           string // update only
	Endpoint     string
	Sector       string
	Base         string
	EndpointType string
	Lifetime     int // seconds; 0: default (registration) or unchanged (update)
	Extra        map[string]string
	// Links is the link-format payload; nil on an update leaves the links alone.
	Links *string
	// Device is the authenticated device ("" for an application); Remote the peer address
	// (for the default base) and Scheme "coap" or "coaps".
	Device, Remote, Scheme string
}

// Directory is the resource directory: registrations in KV (shared by all instances) with an
// in-memory copy for lookups, removed when their lifetime ends.
type Directory struct {
	cfg DirectoryConfig
	kv  jetstream.KeyValue
	log *slog.Logger
	now func() time.Time

	mu   sync.RWMutex
	regs map[string]*dirEntry
}

type dirEntry struct {
	reg   Registration
	links []linkformat.Link
}

func newDirectory(ctx context.Context, js jetstream.JetStream, cfg DirectoryConfig, replicas int, log *slog.Logger) (*Directory, error) {
	if cfg.MaxRegistrations == 0 {
		cfg.MaxRegistrations = 100000
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = time.Second
	}
	kv, err := streams.OpenBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket: DirectoryBucket, Description: "Tributary CoRE resource directory", History: 1,
		Storage: jetstream.FileStorage, Replicas: replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("resource directory bucket: %w", err)
	}
	d := &Directory{cfg: cfg, kv: kv, log: log, now: time.Now, regs: map[string]*dirEntry{}}
	if err := streams.LoadBucket(ctx, kv, d.apply); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *Directory) apply(e jetstream.KeyValueEntry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(d.regs, e.Key())
		return
	}
	var r Registration
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return
	}
	links, _ := linkformat.Parse(r.Links)
	d.regs[e.Key()] = &dirEntry{reg: r, links: links}
}

func (d *Directory) run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- streams.WatchBucket(ctx, d.kv, d.apply) }()
	t := time.NewTicker(d.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return <-errc
		case err := <-errc:
			return err
		case <-t.C:
			d.sweep(ctx)
		}
	}
}

// sweep removes expired registrations (the revision check keeps an update made meanwhile).
func (d *Directory) sweep(ctx context.Context) {
	now := d.now()
	var due []string
	d.mu.RLock()
	for id, e := range d.regs {
		if !now.Before(e.reg.ExpiresAt) {
			due = append(due, id)
		}
	}
	d.mu.RUnlock()
	for _, id := range due {
		e, err := d.kv.Get(ctx, id)
		if err != nil {
			continue
		}
		var r Registration
		if json.Unmarshal(e.Value(), &r) == nil && now.Before(r.ExpiresAt) {
			continue
		}
		if err := d.kv.Delete(ctx, id, jetstream.LastRevision(e.Revision())); err == nil {
			d.mu.Lock()
			delete(d.regs, id)
			d.mu.Unlock()
			d.log.Debug("rd registration expired", "ep", r.Endpoint, "id", id)
		}
	}
}

// validEndpoint: RFC 9176 limits ep and d to 63 bytes; we also keep them printable without
// separators, so they are safe in link-format and logs.
func validEndpoint(s string) bool {
	if s == "" || len(s) > MaxEndpointName {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

func checkLifetime(lt int) error {
	if lt < 1 || lt > 1<<32-1 {
		return fmt.Errorf("%w: lt=%d: want 1..%d seconds", ErrInvalid, lt, uint32(1<<32-1))
	}
	return nil
}

func checkBase(base string) error {
	u, err := url.Parse(base)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return fmt.Errorf("%w: base=%q: want an absolute URI such as coap://[2001:db8::1]:5683", ErrInvalid, base)
	}
	return nil
}

func parseLinks(s string) ([]linkformat.Link, error) {
	if len(s) > MaxRDLinks {
		return nil, fmt.Errorf("%w: link-format payload is %d bytes, the limit is %d", ErrTooLarge, len(s), MaxRDLinks)
	}
	links, err := linkformat.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return links, nil
}

// Register creates a registration, or replaces the one of the same endpoint and sector
// (created false). A device may register only its own ID as ep.
func (d *Directory) Register(ctx context.Context, req RegisterRequest) (Registration, bool, error) {
	switch {
	case !validEndpoint(req.Endpoint):
		return Registration{}, false, fmt.Errorf("%w: ep=%q: want 1..%d printable bytes without spaces or quotes", ErrInvalid, req.Endpoint, MaxEndpointName)
	case req.Sector != "" && !validEndpoint(req.Sector):
		return Registration{}, false, fmt.Errorf("%w: d=%q: want 1..%d printable bytes without spaces or quotes", ErrInvalid, req.Sector, MaxEndpointName)
	case req.Device != "" && req.Endpoint != req.Device:
		return Registration{}, false, fmt.Errorf("%w: device %s may register only ep=%s", ErrForbidden, req.Device, req.Device)
	}
	lt := int(DefaultRDLifetime / time.Second)
	if req.Lifetime != 0 {
		lt = req.Lifetime
	}
	if err := checkLifetime(lt); err != nil {
		return Registration{}, false, err
	}
	base := req.Base
	if base == "" {
		scheme := req.Scheme
		if scheme == "" {
			scheme = "coap"
		}
		base = scheme + "://" + req.Remote
	}
	if err := checkBase(base); err != nil {
		return Registration{}, false, err
	}
	links := ""
	if req.Links != nil {
		links = *req.Links
	}
	parsed, err := parseLinks(links)
	if err != nil {
		return Registration{}, false, err
	}
	now := d.now().UTC()
	r := Registration{
		Endpoint: req.Endpoint, Sector: req.Sector, Base: base, EndpointType: req.EndpointType, Lifetime: lt,
		Extra: req.Extra, Links: linkformat.Format(parsed), Device: req.Device,
		RegisteredAt: now, UpdatedAt: now, ExpiresAt: now.Add(time.Duration(lt) * time.Second),
	}
	// Re-registration of the same endpoint and sector replaces the old one (RFC 9176 §5).
	d.mu.RLock()
	for id, e := range d.regs {
		if e.reg.Endpoint == r.Endpoint && e.reg.Sector == r.Sector {
			r.ID, r.RegisteredAt = id, e.reg.RegisteredAt
			break
		}
	}
	n := len(d.regs)
	d.mu.RUnlock()
	created := r.ID == ""
	if created {
		if n >= d.cfg.MaxRegistrations {
			return Registration{}, false, fmt.Errorf("%w: the directory holds its maximum of %d registrations", ErrUnavailable, d.cfg.MaxRegistrations)
		}
		r.ID = strings.NewReplacer("-", "x", "_", "y").Replace(NewToken()[:10])
	}
	if err := d.store(ctx, r, created); err != nil {
		return Registration{}, false, err
	}
	return r, created, nil
}

func (d *Directory) store(ctx context.Context, r Registration, create bool) error {
	data, _ := json.Marshal(r)
	var err error
	if create {
		_, err = d.kv.Create(ctx, r.ID, data)
	} else {
		_, err = d.kv.Put(ctx, r.ID, data)
	}
	if err != nil {
		return fmt.Errorf("%w: store registration: %v", ErrUnavailable, err)
	}
	links, _ := linkformat.Parse(r.Links)
	d.mu.Lock()
	d.regs[r.ID] = &dirEntry{reg: r, links: links}
	d.mu.Unlock()
	return nil
}

// get returns a live registration that device (or an application, "") may change.
func (d *Directory) get(id, device string) (Registration, error) {
	d.mu.RLock()
	e, ok := d.regs[id]
	d.mu.RUnlock()
	if !ok || !d.now().Before(e.reg.ExpiresAt) {
		return Registration{}, fmt.Errorf("%w: no registration /rd/%s", ErrNotFound, id)
	}
	if device != "" && e.reg.Device != device {
		return Registration{}, fmt.Errorf("%w: /rd/%s belongs to another endpoint", ErrForbidden, id)
	}
	return e.reg, nil
}

// Update refreshes a registration (RFC 9176 §5.3.1): its lifetime starts again; lt, base and
// extra attributes given replace the old ones, and a link-format payload, when given,
// replaces the links.
func (d *Directory) Update(ctx context.Context, req RegisterRequest) (Registration, error) {
	r, err := d.get(req.ID, req.Device)
	if err != nil {
		return Registration{}, err
	}
	if req.Lifetime != 0 {
		if err := checkLifetime(req.Lifetime); err != nil {
			return Registration{}, err
		}
		r.Lifetime = req.Lifetime
	}
	if req.Base != "" {
		if err := checkBase(req.Base); err != nil {
			return Registration{}, err
		}
		r.Base = req.Base
	}
	if req.Links != nil && strings.TrimSpace(*req.Links) != "" {
		parsed, err := parseLinks(*req.Links)
		if err != nil {
			return Registration{}, err
		}
		r.Links = linkformat.Format(parsed)
	}
	for k, v := range req.Extra {
		if r.Extra == nil {
			r.Extra = map[string]string{}
		}
		r.Extra[k] = v
	}
	now := d.now().UTC()
	r.UpdatedAt, r.ExpiresAt = now, now.Add(time.Duration(r.Lifetime)*time.Second)
	return r, d.store(ctx, r, false)
}

// Remove deletes a registration.
func (d *Directory) Remove(ctx context.Context, id, device string) error {
	if _, err := d.get(id, device); err != nil {
		return err
	}
	if err := d.kv.Delete(ctx, id); err != nil {
		return fmt.Errorf("%w: remove registration: %v", ErrUnavailable, err)
	}
	d.mu.Lock()
	delete(d.regs, id)
	d.mu.Unlock()
	return nil
}

// Registrations returns the live registrations, by endpoint name.
func (d *Directory) Registrations() []Registration {
	now := d.now()
	d.mu.RLock()
	out := make([]Registration, 0, len(d.regs))
	for _, e := range d.regs {
		if now.Before(e.reg.ExpiresAt) {
			out = append(out, e.reg)
		}
	}
	d.mu.RUnlock()
	slices.SortFunc(out, func(a, b Registration) int {
		return cmpStrings(a.Endpoint+"\x00"+a.Sector, b.Endpoint+"\x00"+b.Sector)
	})
	return out
}

func cmpStrings(a, b string) int { return strings.Compare(a, b) }

// endpointLink is the registration as an endpoint lookup shows it.
func (r Registration) endpointLink() linkformat.Link {
	l := linkformat.Link{Target: r.Location()}
	l.Params = append(l.Params, linkformat.Param{Name: "ep", Value: r.Endpoint})
	if r.Sector != "" {
		l.Params = append(l.Params, linkformat.Param{Name: "d", Value: r.Sector})
	}
	l.Params = append(l.Params, linkformat.Param{Name: "base", Value: r.Base})
	if r.EndpointType != "" {
		l.Params = append(l.Params, linkformat.Param{Name: "et", Value: r.EndpointType})
	}
	l.Params = append(l.Params, linkformat.Param{Name: "lt", Value: strconv.Itoa(r.Lifetime)})
	keys := make([]string, 0, len(r.Extra))
	for k := range r.Extra {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		l.Params = append(l.Params, linkformat.Param{Name: k, Value: r.Extra[k]})
	}
	return l
}

// resolve makes a link's target absolute against base (RFC 9176 §6: lookup results carry
// absolute URIs) and records the base as anchor.
func resolve(base string, l linkformat.Link) linkformat.Link {
	out := linkformat.Link{Target: l.Target, Params: slices.Clone(l.Params)}
	b, err := url.Parse(base)
	if err == nil {
		if ref, err := url.Parse(l.Target); err == nil {
			out.Target = b.ResolveReference(ref).String()
		}
	}
	if _, ok := out.Get("anchor"); !ok {
		out.Params = append(out.Params, linkformat.Param{Name: "anchor", Value: base})
	}
	return out
}

// Page selects a page of lookup results (RFC 9176 §6: Count results per page, pages numbered
// from 0); Count 0 means all.
type Page struct{ Page, Count int }

func (p Page) cut(n int) (lo, hi int) {
	if p.Count <= 0 {
		return 0, n
	}
	lo = min(p.Page*p.Count, n)
	return lo, min(lo+p.Count, n)
}

// matchEndpoint reports whether filter f matches the registration's own attributes; known
// reports whether f names one at all.
func (r Registration) matchEndpoint(f linkformat.Filter) (match, known bool) {
	var v string
	switch f.Name {
	case "ep":
		v = r.Endpoint
	case "d":
		v = r.Sector
	case "base":
		v = r.Base
	case "et":
		v = r.EndpointType
	case "lt":
		v = strconv.Itoa(r.Lifetime)
	case "href":
		v = r.Location()
	default:
		x, ok := r.Extra[f.Name]
		if !ok {
			return false, false
		}
		v = x
	}
	return linkformat.MatchValue(f.Value, v), true
}

// LookupEndpoints answers /rd-lookup/ep: registrations matching every filter, either by their
// own attributes (ep, d, base, et, lt, href = the registration resource, extra attributes) or
// by having at least one link that matches (rt, if, ...).
func (d *Directory) LookupEndpoints(filters []linkformat.Filter, page Page) []linkformat.Link {
	var out []linkformat.Link
	for _, r := range d.entries() {
		ok := true
		for _, f := range filters {
			if m, known := r.reg.matchEndpoint(f); known {
				ok = m
			} else {
				ok = slices.ContainsFunc(r.links, f.Match)
			}
			if !ok {
				break
			}
		}
		if ok {
			out = append(out, r.reg.endpointLink())
		}
	}
	lo, hi := page.cut(len(out))
	return out[lo:hi]
}

// LookupResources answers /rd-lookup/res: the links of live registrations, made absolute,
// matching every filter either by their own parameters (href compares the absolute URI) or by
// their registration's attributes (ep, d, base, et).
func (d *Directory) LookupResources(filters []linkformat.Filter, page Page) []linkformat.Link {
	var out []linkformat.Link
	for _, r := range d.entries() {
		for _, l := range r.links {
			abs := resolve(r.reg.Base, l)
			ok := true
			for _, f := range filters {
				if f.Name != "href" {
					if m, known := r.reg.matchEndpoint(f); known {
						ok = m
						if !ok {
							break
						}
						continue
					}
				}
				if ok = f.Match(abs); !ok {
					break
				}
			}
			if ok {
				out = append(out, abs)
			}
		}
	}
	lo, hi := page.cut(len(out))
	return out[lo:hi]
}

// entries returns the live entries ordered by endpoint, for stable lookup pages.
func (d *Directory) entries() []*dirEntry {
	now := d.now()
	d.mu.RLock()
	out := make([]*dirEntry, 0, len(d.regs))
	for _, e := range d.regs {
		if now.Before(e.reg.ExpiresAt) {
			out = append(out, e)
		}
	}
	d.mu.RUnlock()
	slices.SortFunc(out, func(a, b *dirEntry) int {
		if c := strings.Compare(a.reg.Endpoint, b.reg.Endpoint); c != 0 {
			return c
		}
		if c := strings.Compare(a.reg.Sector, b.reg.Sector); c != 0 {
			return c
		}
		return strings.Compare(a.reg.ID, b.reg.ID)
	})
	return out
}
