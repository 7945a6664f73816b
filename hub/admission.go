package hub

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tributary-iot/tributary/auth"
	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/protocols/admission"
)

// deviceProfiles tells admission control a device's tenant and the limits set on it and on its
// type, and each tenant's quotas.
type deviceProfiles struct {
	registry *devices.Registry
	types    *devices.Types
	tenants  *auth.Tenants // nil: no per-tenant quotas
}

func (p deviceProfiles) Profile(id string) admission.Profile {
	d, err := p.registry.Get(id)
	if err != nil {
		return admission.Profile{}
	}
	pr := admission.Profile{Tenant: devices.TenantName(d.Tenant), Device: d.Limits}
	if d.Type != "" {
		if t, ok := p.types.Get(d.Type); ok {
			pr.Type = t.Limits
		}
	}
	return pr
}

// TenantLimits are a tenant's rate quotas (POST/PUT /api/v1/tenants), over --tenant-*.
func (p deviceProfiles) TenantLimits(tenant string) devices.Limits {
	if p.tenants == nil {
		return devices.Limits{}
	}
	q := p.tenants.Quotas(tenant)
	return devices.Limits{Rate: q.MessageRate, Burst: q.MessageBurst, BytesRate: q.BytesRate}
}

var _ admission.TenantLimits = deviceProfiles{}

// subjectDemand carries each instance's demand on shared rate buckets (core NATS: a lost
// report only delays a share change by a second).
const subjectDemand = "tributary.admission.demand"

// maxReportedBuckets bounds one demand report; beyond it the buckets with least demand are
// left out (they keep their share, or the whole limit, until they are reported again).
const maxReportedBuckets = 5000

// demandReport is one instance's demand and its device connections per tenant, as sent on
// subjectDemand.
type demandReport struct {
	Instance    string           `json:"instance"`
	Demand      admission.Demand `json:"demand"`
	Connections map[string]int   `json:"connections,omitempty"`
}

// rateSharing splits tenants' and API keys' rate limits between the hub instances sharing
// NATS (admission.Shares): every interval it sends this instance's demand, keeps the other
// instances' latest reports, and sets this instance's shares. With one instance every share
// is 1, so nothing changes. The reports also carry each instance's device connections per
// tenant, which a tenant's connection limit counts together.
type rateSharing struct {
	nc       *nats.Conn
	adm      *admission.Controller
	self     string
	interval time.Duration
	log      *slog.Logger
}

type peerDemand struct {
	at     time.Time
	demand admission.Demand
	conns  map[string]int
}

func (r *rateSharing) Run(ctx context.Context) error {
	var mu sync.Mutex
	peers := map[string]peerDemand{}
	sub, err := r.nc.Subscribe(subjectDemand, func(m *nats.Msg) {
		var rep demandReport
		if err := json.Unmarshal(m.Data, &rep); err != nil || rep.Instance == "" {
			r.log.Warn("ignoring a malformed rate demand report", "err", err, "bytes", len(m.Data))
			return
		}
		if rep.Instance == r.self {
			return
		}
		mu.Lock()
		peers[rep.Instance] = peerDemand{time.Now(), rep.Demand, rep.Connections}
		mu.Unlock()
	})
	if err != nil {
		return fmt.Errorf("rate sharing: subscribe %s: %w", subjectDemand, err)
	}
	defer sub.Unsubscribe()
	tick := time.NewTicker(r.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		// Sent also when empty, so that the others see demand here end within an interval.
		own := trimDemand(r.adm.TakeDemand(), maxReportedBuckets)
		data, _ := json.Marshal(demandReport{Instance: r.self, Demand: own, Connections: r.adm.TenantConnections()})
		if err := r.nc.Publish(subjectDemand, data); err != nil {
			r.log.Debug("rate demand report not sent", "err", err)
		}
		var others []admission.Demand
		peerConns := map[string]int{}
		mu.Lock()
		for id, p := range peers {
			// An instance that has not reported for three intervals is gone; its share
			// goes back to the others.
			if time.Since(p.at) > 3*r.interval {
				delete(peers, id)
				continue
			}
			others = append(others, p.demand)
			for tenant, n := range p.conns {
				peerConns[tenant] += n
			}
		}
		mu.Unlock()
		admission.MetricPeers.Set(float64(len(others)))
		r.adm.SetShares(admission.Shares(own, others))
		r.adm.SetPeerConnections(peerConns)
	}
}

// trimDemand keeps the n buckets with the most demand.
func trimDemand(d admission.Demand, n int) admission.Demand {
	if len(d) <= n {
		return d
	}
	keys := slices.SortedFunc(maps.Keys(d), func(a, b string) int { return cmp.Compare(d[b], d[a]) })
	out := make(admission.Demand, n)
	for _, k := range keys[:n] {
		out[k] = d[k]
	}
	return out
}
