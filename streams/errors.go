package streams

import "errors"

var (
	// ErrInvalidTopic is returned for a topic or filter that cannot be mapped to a NATS subject.
	ErrInvalidTopic = errors.New("invalid topic")
	// ErrClosed is returned by a Bus that has been closed.
	ErrClosed = errors.New("bus closed")
)
