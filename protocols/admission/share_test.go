package admission

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/quick"
	"time"

	"github.com/tributary-iot/tributary/devices"
)

// TestSharesAddUpToOne: however demand is spread, the shares of a bucket of the instances
// with demand, each computed from its own demand and the others' reports, add up to 1, and
// follow demand: an instance with more demand never gets a smaller share.
func TestSharesAddUpToOne(t *testing.T) {
	prop := func(seed int64, nInst uint8) bool {
		r := rand.New(rand.NewPCG(uint64(seed), 7))
		n := int(nInst%6) + 1
		demand := make([]Demand, n)
		for i := range demand {
			demand[i] = Demand{}
			if r.IntN(4) > 0 { // some instances see no traffic of the bucket
				demand[i]["tenant:t"] = r.Float64() * 1000
			}
		}
		shares := make([]float64, n)
		sum := 0.0
		for i := range n {
			others := append(append([]Demand{}, demand[:i]...), demand[i+1:]...)
			s, ok := Shares(demand[i], others)["tenant:t"]
			if !ok {
				s = 1
			}
			shares[i] = s
			if demand[i]["tenant:t"] > 0 {
				sum += s // an instance without demand keeps a floor share for when it gets some
			}
		}
		with := 0
		for i := range n {
			if demand[i]["tenant:t"] > 0 {
				with++
			}
		}
		if with == 0 {
			return true // nobody asked: every instance keeps the whole limit until someone does
		}
		if math.Abs(sum-1) > 1e-9 {
			t.Logf("demand %v: shares %v add up to %v", demand, shares, sum)
			return false
		}
		for i := range n {
			for j := range n {
				if demand[i]["tenant:t"] > demand[j]["tenant:t"] && demand[j]["tenant:t"] > 0 && shares[i] < shares[j]-1e-12 {
					t.Logf("demand %v: shares %v", demand, shares)
					return false
				}
			}
		}
		return true
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 2000}); err != nil {
		t.Error(err)
	}
}

func TestSharesExamples(t *testing.T) {
	for _, tt := range []struct {
		name   string
		own    float64
		others []float64
		want   float64
	}{
		{"alone", 100, nil, 1},
		{"even", 100, []float64{100}, 0.5},
		{"three even", 50, []float64{50, 50}, 1.0 / 3},
		{"most of it", 300, []float64{100}, 0.75},
		// A newcomer gets the floor, scaled: 0.05 / (1 + 0.05).
		{"newcomer", 0, []float64{400}, 0.05 / 1.05},
		{"busy next to a trickle", 1000, []float64{1}, (1000.0 / 1001) / (1000.0/1001 + 0.05)},
	} {
		var others []Demand
		for _, d := range tt.others {
			others = append(others, Demand{"tenant:t": d})
		}
		got, ok := Shares(Demand{"tenant:t": tt.own}, others)["tenant:t"]
		if !ok {
			got = 1
		}
		if math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("%s: share %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestTenantBucketRunsAtItsShare: a tenant limited to 100/s, burst 100, on an instance given a
// quarter of it admits 25 at once and 25/s after, says so when it refuses, and reports its
// demand.
func TestTenantBucketRunsAtItsShare(t *testing.T) {
	c, clk := newTest(t, Config{Tenant: devices.Limits{Rate: 100, Burst: 100}}, nil)
	c.SetShares(map[string]float64{TenantBucket(DefaultTenant): 0.25})
	c.TakeDemand() // demand is counted from here
	ctx := context.Background()
	admitted := 0
	var lastErr error
	for range 10_000 { // 1000/s for 10 s
		if err := c.Publish(ctx, "test", "d1", 10, false); err == nil {
			admitted++
		} else {
			lastErr = err
		}
		clk.add(time.Millisecond)
	}
	if want := 25*10 + 25; admitted < want-3 || admitted > want+3 {
		t.Errorf("admitted %d at a quarter of 100/s (burst 100) over 10 s, want %d", admitted, want)
	}
	var ex *Exceeded
	if !errors.As(lastErr, &ex) || !strings.Contains(ex.Limit, "tenant default message rate 100/s (25/s on this instance, its share)") {
		t.Errorf("refusal %v: want it to name the tenant's rate and this instance's share", lastErr)
	}
	if d := c.TakeDemand()[TenantBucket(DefaultTenant)]; d < 900 || d > 1100 {
		t.Errorf("demand %v/s, want the 1000/s offered", d)
	}
	// Back to the whole limit once the share goes: the rate at once, the burst as it refills
	// (the 25 tokens held are not topped up).
	c.SetShares(nil)
	clk.add(2 * time.Second)
	admitted = 0
	for range 1000 {
		if c.Publish(ctx, "test", "d1", 10, false) == nil {
			admitted++
		}
		clk.add(time.Millisecond)
	}
	if admitted < 120 || admitted > 130 {
		t.Errorf("admitted %d in 1 s with the whole limit back (25 tokens held + 100/s), want 125", admitted)
	}
}

func TestAPIKeyBucketRunsAtItsShare(t *testing.T) {
	c, clk := newTest(t, Config{APIRate: 40, APIBurst: 40}, nil)
	c.SetShares(map[string]float64{APIBucket("key k"): 0.5})
	admitted := 0
	for range 5000 { // 1000/s for 5 s
		if _, ok := c.AllowAPI("key k"); ok {
			admitted++
		}
		clk.add(time.Millisecond)
	}
	if want := 20*5 + 20; admitted < want-3 || admitted > want+3 {
		t.Errorf("admitted %d at half of 40/s (burst 40) over 5 s, want %d", admitted, want)
	}
	if d := c.TakeDemand()[APIBucket("key k")]; d <= 0 {
		t.Errorf("demand of key k %v, want the requests counted", d)
	}
}
