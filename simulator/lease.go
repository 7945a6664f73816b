package simulator

import (
	"context"
	"slices"
	"time"
)

// Holder reports who runs a job now: its owner ("" when none) and that owner's last heartbeat.
// ok is false when the job cannot be read (gone, or the store failed).
type Holder func(ctx context.Context) (owner string, heartbeat time.Time, ok bool)

// WaitReleased polls until no instance holds the job (no owner, or a heartbeat older than
// lease) or deadline passes, so that a delete cannot race the job's last writes.
func WaitReleased(ctx context.Context, held Holder, lease time.Duration, deadline time.Time, now func() time.Time) error {
	for {
		owner, hb, ok := held(ctx)
		if !ok || owner == "" || now().Sub(hb) > lease || now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Members tells which hub instances are alive: their names, and whether the list is known yet
// (false while the lease store is still loading). The lease store's members are keys the NATS
// server expires, so no two clocks are compared.
type Members func() (live []string, known bool)

// OwnerAlive reports whether a job's owner still runs it: with members, whether the owner is a
// live member (an unknown list counts as alive, so nothing is taken over too early); without,
// whether its last heartbeat, read against the local clock, is within lease.
func OwnerAlive(owner string, heartbeat time.Time, members Members, lease time.Duration, now time.Time) bool {
	if owner == "" {
		return false
	}
	if members != nil {
		live, known := members()
		return !known || slices.Contains(live, owner)
	}
	return now.Sub(heartbeat) <= lease
}
