package admission

// Sharing tenants' and API keys' rates between hub instances.
//
// Each instance holds its own token buckets, so with several behind a load balancer a tenant
// limited to R/s would get R/s from each. Instead each instance reports, about once a second,
// how many messages (or requests) each shared bucket was asked to admit there — its demand —
// and runs its buckets at its share of the limit: its demand over every instance's, with a
// floor, so that an instance just starting to see a tenant's traffic is not starved until its
// report arrives. The shares of the instances add up to 1, so the cluster as a whole admits
// the limit. Device buckets are not shared: a device is connected to one instance at a time.

// ShareFloor is the least weight an instance with demand, or this instance, gets in a
// bucket's split, before the weights are scaled to add up to 1. An instance whose traffic has
// just begun runs at about this share of the limit for a report interval.
const ShareFloor = 0.05

// Demand is one instance's demand per shared bucket over the last report interval, in
// messages or requests per second. Bucket names are TenantBucket and APIBucket values.
type Demand map[string]float64

// TenantBucket and APIBucket name shared buckets in Demand and in shares.
func TenantBucket(tenant string) string { return "tenant:" + tenant }
func APIBucket(key string) string       { return "api:" + key }

// Shares is this instance's share of each bucket that any instance reported demand for,
// given its own demand and the latest demand of each other live instance. A bucket missing
// from the result is this instance's alone (share 1).
func Shares(own Demand, others []Demand) map[string]float64 {
	out := map[string]float64{}
	for bucket := range union(own, others) {
		total := own[bucket]
		shared := false
		for _, o := range others {
			if d := o[bucket]; d > 0 {
				total += d
				shared = true
			}
		}
		if !shared || total <= 0 {
			continue
		}
		weight := func(d float64) float64 { return max(d/total, ShareFloor) }
		sum := weight(own[bucket])
		for _, o := range others {
			if d := o[bucket]; d > 0 {
				sum += weight(d)
			}
		}
		out[bucket] = weight(own[bucket]) / sum
	}
	return out
}

func union(own Demand, others []Demand) map[string]struct{} {
	all := make(map[string]struct{}, len(own))
	for b := range own {
		all[b] = struct{}{}
	}
	for _, o := range others {
		for b := range o {
			all[b] = struct{}{}
		}
	}
	return all
}

// SetShares sets this instance's share of shared buckets (as Shares computes them); a bucket
// not in shares gets its whole limit. Buckets take a new share when they are next looked up,
// within a second.
func (c *Controller) SetShares(shares map[string]float64) {
	c.shares.Store(&shares)
}

// share is this instance's share of bucket.
func (c *Controller) share(bucket string) float64 {
	if m := c.shares.Load(); m != nil {
		if s, ok := (*m)[bucket]; ok && s > 0 && s < 1 {
			return s
		}
	}
	return 1
}

// TakeDemand returns the demand on the shared buckets that have limits since the last call
// (per second over the time since then) and starts counting afresh.
func (c *Controller) TakeDemand() Demand {
	now := c.now()
	last := c.demandSince.Swap(now.UnixNano())
	secs := float64(now.UnixNano()-last) / 1e9
	if last == 0 || secs <= 0 {
		secs = 1
	}
	out := Demand{}
	c.tenants.Range(func(k, v any) bool {
		if b := v.(*entry).cur.Load(); b != nil {
			if n := b.demand.Swap(0); n > 0 {
				out[TenantBucket(k.(string))] = float64(n) / secs
			}
		}
		return true
	})
	if c.api != nil {
		for key, n := range c.api.takeDemand() {
			out[APIBucket(key)] = float64(n) / secs
		}
	}
	return out
}
