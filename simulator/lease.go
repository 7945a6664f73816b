package simulator

import (
	"context"
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
