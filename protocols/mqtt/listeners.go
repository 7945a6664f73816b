package mqtt

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/tributary-iot/tributary/tlsconf"
)

// The adapter brings its own mochi listeners instead of listeners.NewTCP / NewWebsocket, so that
//   - the socket is bound in Init, and Addr reports the port chosen for ":0" (mochi's WebSocket
//     listener binds only in Serve and never tells);
//   - a connection must send CONNECT within Config.ConnectTimeout (mochi waits forever);
//   - Close also closes connections that have not finished connecting, and waits for every
//     connection goroutine (with mochi's, a silent connection blocks Close);
//   - ended connections are logged at Debug, not Warn (every refused login and dropped TCP
//     connection would otherwise be a warning).

// conns tracks a listener's connections and the goroutines serving them.
type conns struct {
	mu     sync.Mutex
	open   map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// add registers c; false once the listener is closed (the caller closes c).
func (t *conns) add(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	if t.open == nil {
		t.open = map[net.Conn]struct{}{}
	}
	t.open[c] = struct{}{}
	t.wg.Add(1)
	return true
}

func (t *conns) done(c net.Conn) {
	t.mu.Lock()
	delete(t.open, c)
	t.mu.Unlock()
	t.wg.Done()
}

// expireWrites bounds every write still to come on the connections. Closing, mochi writes a
// DISCONNECT to each client under the client's lock, and a write to a client that does not
// read blocks until the connection's deadline (mochi sets it to 1.5 keep-alives, for reads and
// writes alike): without this, one such client would hold up shutdown that long.
func (t *conns) expireWrites(d time.Duration) {
	deadline := time.Now().Add(d)
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := range t.open {
		_ = c.SetWriteDeadline(deadline)
	}
}

// closeWrites is how long writes may still take once a listener closes.
const closeWrites = time.Second

// closeAll closes every connection and waits for their goroutines.
func (t *conns) closeAll() {
	t.mu.Lock()
	t.closed = true
	for c := range t.open {
		_ = c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
}

// serveConn runs mochi's establish for one connection.
func serveConn(id string, c net.Conn, connectTimeout time.Duration, establish listeners.EstablishFn, log *slog.Logger) {
	_ = c.SetDeadline(time.Now().Add(connectTimeout)) // mochi sets the keep-alive deadline after CONNECT
	if err := establish(id, c); err != nil && !errors.Is(err, errRefused) {
		log.Debug("mqtt connection ended", "listener", id, "remote", c.RemoteAddr().String(), "err", err)
	}
}

// tcpListener serves MQTT over TCP, or over TLS with tlsConfig.
type tcpListener struct {
	id, address    string
	tlsConfig      *tls.Config
	connectTimeout time.Duration
	log            *slog.Logger
	ln             net.Listener
	conns          conns
}

var _ listeners.Listener = (*tcpListener)(nil)

func (l *tcpListener) ID() string       { return l.id }
func (l *tcpListener) Protocol() string { return "tcp" }

// Address is the bound address once Init has run.
func (l *tcpListener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.address
}

func (l *tcpListener) Init(*slog.Logger) error {
	ln, err := listen(l.address, l.id, l.tlsConfig, l.connectTimeout, l.log)
	if err != nil {
		return err
	}
	l.ln = ln
	return nil
}

// listen binds address; with cfg, connections are TLS and handshaken before Accept returns
// them (failures counted and logged by tlsconf as listener "mqtt-"+id).
func listen(address, id string, cfg *tls.Config, timeout time.Duration, log *slog.Logger) (net.Listener, error) {
	ln, err := net.Listen("tcp", address)
	if err != nil || cfg == nil {
		return ln, err
	}
	return tlsconf.NewListener(ln, cfg, "mqtt-"+id, timeout, log), nil
}

func (l *tcpListener) Serve(establish listeners.EstablishFn) {
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// e.g. out of file descriptors: wait, as net/http does, rather than stop serving
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.log.Warn("mqtt accept failed", "listener", l.id, "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if !l.conns.add(c) {
			_ = c.Close()
			return
		}
		go func() {
			defer l.conns.done(c)
			serveConn(l.id, c, l.connectTimeout, establish, l.log)
		}()
	}
}

// stopAccepting closes the socket; established connections carry on.
func (l *tcpListener) stopAccepting() {
	if l.ln != nil {
		_ = l.ln.Close()
	}
}

func (l *tcpListener) Close(closeClients listeners.CloseFn) {
	l.stopAccepting()
	l.conns.expireWrites(closeWrites)
	closeClients(l.id)
	l.conns.closeAll()
}

// wsListener serves MQTT over WebSocket on any path, subprotocol "mqtt"; over TLS with
// tlsConfig.
type wsListener struct {
	id, address    string
	tlsConfig      *tls.Config
	connectTimeout time.Duration
	log            *slog.Logger
	ln             net.Listener
	srv            *http.Server
	establish      listeners.EstablishFn
	conns          conns
}

var _ listeners.Listener = (*wsListener)(nil)

var upgrader = websocket.Upgrader{
	Subprotocols: []string{"mqtt"},
	// Browser dashboards on other origins are expected; clients authenticate with MQTT
	// credentials, not cookies, so there is nothing to forge.
	CheckOrigin: func(*http.Request) bool { return true },
}

func (l *wsListener) ID() string       { return l.id }
func (l *wsListener) Protocol() string { return "ws" }

func (l *wsListener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.address
}

func (l *wsListener) Init(*slog.Logger) error {
	ln, err := listen(l.address, l.id, l.tlsConfig, l.connectTimeout, l.log)
	if err != nil {
		return err
	}
	l.ln = ln
	l.srv = &http.Server{
		Handler:           l,
		ReadHeaderTimeout: l.connectTimeout,
		ErrorLog:          slog.NewLogLogger(l.log.Handler(), slog.LevelDebug),
	}
	return nil
}

func (l *wsListener) Serve(establish listeners.EstablishFn) {
	l.establish = establish
	_ = l.srv.Serve(l.ln) // returns once closed
}

func (l *wsListener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	c := &wsConn{Conn: ws.UnderlyingConn(), ws: ws, tls: r.TLS}
	if !l.conns.add(c) {
		_ = c.Close()
		return
	}
	defer l.conns.done(c)
	serveConn(l.id, c, l.connectTimeout, l.establish, l.log)
	_ = c.Close()
}

func (l *wsListener) stopAccepting() {
	if l.ln != nil {
		_ = l.ln.Close()
	}
}

func (l *wsListener) Close(closeClients listeners.CloseFn) {
	l.stopAccepting()
	if l.srv != nil {
		_ = l.srv.Close()
	}
	l.conns.expireWrites(closeWrites)
	closeClients(l.id)
	l.conns.closeAll()
}

// wsConn is a WebSocket connection as the byte stream mochi reads: MQTT packets travel in
// binary messages, one packet may span messages and one message may hold several packets.
// Deadlines and Close act on the underlying connection.
type wsConn struct {
	net.Conn
	ws  *websocket.Conn
	r   io.Reader            // the current message, nil between messages
	tls *tls.ConnectionState // nil over plain HTTP
}

// ConnectionState is the TLS state of a secure WebSocket (zero over plain HTTP), for
// authentication by client certificate.
func (c *wsConn) ConnectionState() tls.ConnectionState {
	if c.tls == nil {
		return tls.ConnectionState{}
	}
	return *c.tls
}

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, errors.New("websocket: MQTT needs binary messages")
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue // empty message or end of one: read the next
			}
			err = nil
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
