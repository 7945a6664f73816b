package rules_test

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streams/streamstest"
)

// instance is the hub's name in leases, from /readyz.
func (p *hubProc) instance() string {
	var r struct {
		Components struct {
			Leases struct {
				Instance string   `json:"instance"`
				Rules    []string `json:"rules"`
			} `json:"leases"`
		} `json:"components"`
	}
	if code := p.do("GET", "/readyz", nil, &r); code != http.StatusOK || r.Components.Leases.Instance == "" {
		p.t.Fatalf("readyz: %d, no leases.instance", code)
	}
	return r.Components.Leases.Instance
}

// TestRuleOwnerKilled runs two hubd instances on one NATS server. The rules spread over them;
// the owner of rule k9 is killed with SIGKILL while k9 has windows open, the other instance
// takes k9 over within about the lease TTL, and in the end everything the rules published is
// what an uninterrupted run publishes: every window, each value, once.
func TestRuleOwnerKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs hubd")
	}
	bin := buildHubd(t)
	want := referenceOutputs(t, bin)

	ns := streamstest.Server(t) // the "external" NATS the hubd instances share
	const ttl = 2 * time.Second
	flags := []string{"--nats-url", ns.ClientURL(), "--nats-addr", "", "--lease-ttl", ttl.String()}
	a := startHubd(t, bin, t.TempDir(), flags...)
	b := startHubd(t, bin, t.TempDir(), flags...)
	a.nats, b.nats = ns.ClientURL(), ns.ClientURL()
	hubs := map[string]*hubProc{a.instance(): a, b.instance(): b}
	tokens := setupKillHub(t, a)

	// One rule on each instance, and both instances agree on who owns what.
	owner := func(p *hubProc, rule string) string { return p.stats(rule).Owner }
	eventually(t, 10*ttl, func() bool {
		o1, o2 := owner(a, "k9"), owner(a, "k9-sum")
		return o1 != "" && o2 != "" && o1 != o2 && owner(b, "k9") == o1 && owner(b, "k9-sum") == o2
	}, "rules not spread over both instances: k9 on %q, k9-sum on %q", owner(a, "k9"), owner(a, "k9-sum"))
	victim := hubs[owner(a, "k9")]
	survivor := a
	if victim == a {
		survivor = b
	}
	si := survivor.instance()

	// Devices publish to the survivor; the owner of k9 dies while k9 is busy mid-window.
	sendKill(t, survivor, tokens, 0, 1200)
	before := victim.stats("k9")
	victim.kill()
	killed := time.Now()
	eventually(t, ttl+10*time.Second, func() bool { s := survivor.stats("k9"); return s.Owner == si && s.Running }, "k9 not taken over by %s", si)
	took := time.Since(killed)
	sendKill(t, survivor, tokens, 1200, killEvents+2)
	after := settle(t, survivor)
	got := outputs(t, survivor)
	t.Logf("killed k9's owner at %d events in, %d results; %s took over after %v (lease TTL %v); in the end %d results, %d re-emitted outputs skipped",
		before.EventsIn, before.Results, si, took.Round(time.Millisecond), ttl, after.Results, after.DuplicatesSkipped)

	if took > ttl+5*time.Second {
		t.Errorf("takeover took %v, want at most the lease TTL %v plus 5s", took, ttl)
	}
	if !slices.Equal(got, want) {
		missing, extra := diff(want, got), diff(got, want)
		t.Errorf("after the owner's kill -9: %d messages, want %d; missing %d, e.g. %q; extra %d, e.g. %q",
			len(got), len(want), len(missing), first(missing), len(extra), first(extra))
	}
}
