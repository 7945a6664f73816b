package coap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// Ping sends a CoAP ping — an empty confirmable message, which every CoAP endpoint answers
// with a Reset (RFC 7252 §4.3) — to addr from the server's own UDP socket, so it reaches a
// device behind a NAT the way its responses do, and returns the round-trip time. go-coap
// retransmits it (ACK_TIMEOUT 2s, doubling) until ctx ends.
func (s *Server) Ping(ctx context.Context, addr string) (time.Duration, error) {
	srv := s.udp.Load()
	if srv == nil {
		return 0, errors.New("coap: the server is not running")
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return 0, fmt.Errorf("coap ping: address %q: %w", addr, err)
	}
	cc, err := srv.NewConn(ua)
	if err != nil {
		return 0, fmt.Errorf("coap ping %s: %w", addr, err)
	}
	pong := make(chan time.Time, 1)
	start := time.Now()
	cancel, err := cc.AsyncPing(func() {
		select {
		case pong <- time.Now():
		default:
		}
	})
	if err != nil {
		return 0, fmt.Errorf("coap ping %s: %w", addr, err)
	}
	defer cancel()
	select {
	case at := <-pong:
		return at.Sub(start), nil
	case <-ctx.Done():
		return 0, fmt.Errorf("coap ping %s: no answer: %w", addr, ctx.Err())
	}
}
