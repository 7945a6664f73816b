package window

import "errors"

var (
	// ErrSnapshotMismatch is returned by Restore for a snapshot taken with
	// another plan (rule text) or other options.
	ErrSnapshotMismatch = errors.New("snapshot is of another plan or options")
	// ErrCorruptSnapshot is returned by Restore for bytes that are not a
	// complete snapshot.
	ErrCorruptSnapshot = errors.New("corrupt snapshot")
)

var errCorrupt = ErrCorruptSnapshot
