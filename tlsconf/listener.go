package tlsconf

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Listener accepts TCP connections and completes their TLS handshake, each on its own
// goroutine, before Accept returns them (as *tls.Conn). Doing the handshake here rather than
// lazily on the first read means one slow or silent client cannot hold up others, every failed
// handshake is counted (tributary_tls_handshake_failures_total) and logged with the peer's
// address, and http.Server sees a finished handshake (it serves r.TLS as usual).
type Listener struct {
	inner   net.Listener
	cfg     *tls.Config
	name    string
	timeout time.Duration
	log     *slog.Logger
	fails   *HandshakeLogger

	start sync.Once
	ready chan net.Conn
	done  chan struct{}
	close sync.Once

	mu      sync.Mutex
	closed  bool
	pending map[net.Conn]struct{}
	wg      sync.WaitGroup
}

var _ net.Listener = (*Listener)(nil)

// NewListener serves TLS with cfg on inner. name labels metrics and logs ("mqtts", "https",
// ...); a handshake must finish within timeout.
func NewListener(inner net.Listener, cfg *tls.Config, name string, timeout time.Duration, log *slog.Logger) *Listener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Listener{
		inner: inner, cfg: cfg, name: name, timeout: timeout,
		log:     log.With("component", "tls", "listener", name),
		fails:   NewHandshakeLogger(name, log),
		ready:   make(chan net.Conn),
		done:    make(chan struct{}),
		pending: map[net.Conn]struct{}{},
	}
}

// Accept returns the next connection whose handshake succeeded.
func (l *Listener) Accept() (net.Conn, error) {
	l.start.Do(func() {
		l.mu.Lock() // no wg.Add once Close may be waiting
		defer l.mu.Unlock()
		if !l.closed {
			l.wg.Add(1)
			go l.acceptLoop()
		}
	})
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting, aborts handshakes in progress and waits for their goroutines.
// Connections already returned by Accept belong to the caller.
func (l *Listener) Close() error {
	var err error
	l.close.Do(func() {
		err = l.inner.Close()
		l.mu.Lock()
		l.closed = true
		for c := range l.pending {
			_ = c.Close()
		}
		l.mu.Unlock()
		close(l.done)
		l.wg.Wait()
	})
	return err
}

func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		c, err := l.inner.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				go l.Close() // Close waits for this goroutine
				return
			}
			// e.g. out of file descriptors: wait, as net/http does, rather than stop serving
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.log.Warn("accept failed", "err", err, "retry_in", backoff)
			select {
			case <-l.done:
				return
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		if !l.track(c) {
			_ = c.Close()
			return
		}
		go l.handshake(c)
	}
}

func (l *Listener) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.pending[c] = struct{}{}
	l.wg.Add(1)
	return true
}

func (l *Listener) untrack(c net.Conn) (closed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.pending, c)
	return l.closed
}

func (l *Listener) handshake(raw net.Conn) {
	defer l.wg.Done()
	tc := tls.Server(raw, l.cfg)
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if closed := l.untrack(raw); closed {
		_ = tc.Close()
		return
	}
	if err != nil {
		answerPlainHTTP(err)
		_ = raw.Close()
		l.fails.Failed(raw.RemoteAddr().String(), err)
		return
	}
	select {
	case l.ready <- tc:
	case <-l.done:
		_ = tc.Close()
	}
}

// logLimiter lets one log line through per interval and counts the ones it holds back: a port
// scan or a fleet with an expired certificate must not flood the log.
type logLimiter struct {
	every time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (r *logLimiter) allow() (ok bool, suppressed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if !r.last.IsZero() && now.Sub(r.last) < r.every {
		r.suppressed++
		return false, 0
	}
	r.last = now
	suppressed, r.suppressed = r.suppressed, 0
	return true, suppressed
}

// HandshakeLogger counts every failed handshake of a listener and logs them, with the peer's
// address, at most once per 10 s. Listener uses one; DTLS listeners use their own.
type HandshakeLogger struct {
	name  string
	log   *slog.Logger
	limit logLimiter
}

// NewHandshakeLogger returns a HandshakeLogger for listener name.
func NewHandshakeLogger(name string, log *slog.Logger) *HandshakeLogger {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	metricHandshakeFailures.WithLabelValues(name) // present at 0 from the start
	return &HandshakeLogger{name: name, log: log.With("component", "tls", "listener", name), limit: logLimiter{every: 10 * time.Second}}
}

// Failed counts and (rate-limited) logs one failed handshake from remote.
func (h *HandshakeLogger) Failed(remote string, err error) {
	metricHandshakeFailures.WithLabelValues(h.name).Inc()
	if ok, suppressed := h.limit.allow(); ok {
		h.log.Info("TLS handshake failed", "remote", remote, "err", err, "suppressed_since_last", suppressed)
	}
}

// answerPlainHTTP tells a client that spoke plain HTTP to a TLS port what went wrong, as
// net/http's own TLS server does, instead of just closing the connection.
func answerPlainHTTP(err error) {
	var re tls.RecordHeaderError
	if !errors.As(err, &re) || re.Conn == nil {
		return
	}
	switch string(re.RecordHeader[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO", "DELET", "PATCH":
		_ = re.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to a TLS port: use https:// or wss://.\n")
	}
}
