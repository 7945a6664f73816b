package simulator

import (
	"testing"
	"time"
)

// OwnerAlive: with a known member list only membership counts, however old or new the heartbeat
// (so a skewed clock cannot take a job from a live owner); an unknown list never lets a job be
// taken; without members the heartbeat decides.
func TestOwnerAlive(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	members := func(live []string, known bool) Members { return func() ([]string, bool) { return live, known } }
	for _, tc := range []struct {
		name      string
		owner     string
		heartbeat time.Time
		members   Members
		want      bool
	}{
		{"no owner", "", now, nil, false},
		{"live member, heartbeat an hour old (clock skew)", "a", now.Add(-time.Hour), members([]string{"a", "b"}, true), true},
		{"gone member, fresh heartbeat", "c", now, members([]string{"a", "b"}, true), false},
		{"list not known yet", "c", now.Add(-time.Hour), members(nil, false), true},
		{"heartbeat within the lease", "a", now.Add(-4 * time.Second), nil, true},
		{"heartbeat past the lease", "a", now.Add(-6 * time.Second), nil, false},
	} {
		if got := OwnerAlive(tc.owner, tc.heartbeat, tc.members, 5*time.Second, now); got != tc.want {
			t.Errorf("%s: OwnerAlive = %v, want %v", tc.name, got, tc.want)
		}
	}
}
