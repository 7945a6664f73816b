// Package natscluster runs a NATS cluster with JetStream in this process: n nats-server nodes
// with routes between them on loopback, each storing under a directory of its own. Tests,
// benchmarks and `hubctl dev cluster` use it to run several hubs the way production does (R3
// streams and KV buckets), and tests stop and restart single nodes to check what survives.
//
// A node's Stop is nats-server's Shutdown: the node closes its connections and its Raft groups
// lose it at once, as when the process dies (JetStream syncs its files on its own schedule
// either way). Hubs that must die by SIGKILL run as child processes (hub/hubproc).
package natscluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options of a cluster; zero values are defaults.
type Options struct {
	// Nodes is how many servers (default 3).
	Nodes int
	// Dir holds each node's JetStream store in Dir/<node name>. Required.
	Dir string
	// Name is the cluster's name (default "tributary").
	Name string
	// Host is the address every listener binds to (default "127.0.0.1").
	Host string
	// ClientPorts and RoutePorts fix the ports (index i for node i); missing or 0: a free port.
	ClientPorts, RoutePorts []int
	// MonitorPorts, when set, opens each node's HTTP monitoring (/healthz, /jsz) on that port.
	MonitorPorts []int
	// MaxStore bounds each node's JetStream file storage in bytes (default 1 GiB).
	MaxStore int64
	// Logger, if set, gets the servers' warnings and errors.
	Logger server.Logger
}

// Cluster is a running set of nodes.
type Cluster struct {
	opts  Options
	mu    sync.Mutex
	nodes []*node
}

type node struct {
	name   string
	opts   *server.Options
	srv    *server.Server // nil while stopped
	client string         // nats://host:port, fixed across restarts
}

// Start starts every node and returns once all accept clients and JetStream has a meta leader
// and is current on each (or after 30 s, with an error).
//
// Ports left free are picked by the kernel and held until just before their node binds them,
// but another process may still take one in that moment (an outgoing connection's ephemeral
// port, say); a node that cannot listen makes Start try again with fresh ports, three times.
func Start(opts Options) (*Cluster, error) {
	if opts.Dir == "" {
		return nil, errors.New("natscluster: Dir is required")
	}
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Name == "" {
		opts.Name = "tributary"
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.MaxStore == 0 {
		opts.MaxStore = 1 << 30
	}
	var err error
	for attempt := 1; ; attempt++ {
		var c *Cluster
		if c, err = start(opts); err == nil {
			return c, nil
		}
		if !errors.Is(err, errListen) || attempt == 3 || opts.portsFixed() {
			return nil, err
		}
		// Each attempt's nodes store under a fresh directory: a half-started node may have
		// written its meta state, which names peers that will not come back.
		opts.Dir = filepath.Join(opts.Dir, fmt.Sprintf("retry%d", attempt))
	}
}

// portsFixed tells whether every client and route port was given, so a retry would bind the
// same ports again.
func (o Options) portsFixed() bool {
	fixed := func(ports []int) bool {
		if len(ports) < o.Nodes {
			return false
		}
		for _, p := range ports[:o.Nodes] {
			if p == 0 {
				return false
			}
		}
		return true
	}
	return fixed(o.ClientPorts) && fixed(o.RoutePorts)
}

// errListen marks a node that could not open its listeners.
var errListen = errors.New("cannot listen")

func start(opts Options) (*Cluster, error) {
	held := &reservations{}
	defer held.release()
	port := func(ports []int, i int) (int, error) {
		if i < len(ports) && ports[i] != 0 {
			return ports[i], nil
		}
		return held.reserve(i, opts.Host)
	}
	c := &Cluster{opts: opts}
	routes := make([]string, opts.Nodes)
	for i := range opts.Nodes {
		cp, err := port(opts.ClientPorts, i)
		if err != nil {
			return nil, err
		}
		rp, err := port(opts.RoutePorts, i)
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("n%d", i+1)
		so := &server.Options{
			ServerName:         name,
			Host:               opts.Host,
			Port:               cp,
			JetStream:          true,
			StoreDir:           filepath.Join(opts.Dir, name),
			JetStreamMaxMemory: 64 << 20,
			JetStreamMaxStore:  opts.MaxStore,
			NoSigs:             true,
			Cluster:            server.ClusterOpts{Name: opts.Name, Host: opts.Host, Port: rp},
		}
		if i < len(opts.MonitorPorts) && opts.MonitorPorts[i] != 0 {
			so.HTTPHost, so.HTTPPort = opts.Host, opts.MonitorPorts[i]
		}
		routes[i] = fmt.Sprintf("nats-route://%s:%d", opts.Host, rp)
		c.nodes = append(c.nodes, &node{name: name, opts: so, client: fmt.Sprintf("nats://%s:%d", opts.Host, cp)})
	}
	for i, n := range c.nodes {
		var others []string
		for j, r := range routes {
			if j != i {
				others = append(others, r)
			}
		}
		n.opts.Routes = server.RoutesFromStr(strings.Join(others, ","))
	}
	for i := range c.nodes {
		held.releaseNode(i)
		if err := c.startNode(i); err != nil {
			c.Close()
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// ForTest starts a cluster of n nodes under t.TempDir and closes it at cleanup.
func ForTest(t testing.TB, n int) *Cluster {
	t.Helper()
	c, err := Start(Options{Nodes: n, Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("nats cluster: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func (c *Cluster) startNode(i int) error {
	n := c.nodes[i]
	if err := os.MkdirAll(n.opts.StoreDir, 0o755); err != nil {
		return fmt.Errorf("natscluster: %s: %w", n.name, err)
	}
	srv, err := server.NewServer(n.opts.Clone())
	if err != nil {
		return fmt.Errorf("natscluster: %s: %w", n.name, err)
	}
	// The server reports a listener it cannot open only through its logger (Fatalf); watch
	// for that so a taken port fails the start at once rather than after the whole wait.
	logger := &fatalWatch{next: c.opts.Logger}
	srv.SetLoggerV2(logger, false, false, false)
	srv.Start()
	for deadline := time.Now().Add(15 * time.Second); !srv.ReadyForConnections(50 * time.Millisecond); {
		if msg := logger.fatal(); msg != "" || time.Now().After(deadline) {
			srv.Shutdown()
			srv.WaitForShutdown()
			if msg == "" {
				return fmt.Errorf("natscluster: %s not accepting clients after 15s", n.name)
			}
			return fmt.Errorf("natscluster: %s: %s: %w", n.name, msg, errListen)
		}
	}
	c.mu.Lock()
	n.srv = srv
	c.mu.Unlock()
	return nil
}

// fatalWatch is a server.Logger that remembers the first fatal message and passes every
// warning and error on to next, when set.
type fatalWatch struct {
	next server.Logger
	mu   sync.Mutex
	msg  string
}

func (l *fatalWatch) fatal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.msg
}

func (l *fatalWatch) Fatalf(format string, v ...any) {
	l.mu.Lock()
	if l.msg == "" {
		l.msg = fmt.Sprintf(format, v...)
	}
	l.mu.Unlock()
	if l.next != nil {
		l.next.Errorf(format, v...) // the next logger's Fatalf may exit the process
	}
}

func (l *fatalWatch) Errorf(format string, v ...any) {
	if l.next != nil {
		l.next.Errorf(format, v...)
	}
}

func (l *fatalWatch) Warnf(format string, v ...any) {
	if l.next != nil {
		l.next.Warnf(format, v...)
	}
}

func (l *fatalWatch) Noticef(string, ...any) {}
func (l *fatalWatch) Debugf(string, ...any)  {}
func (l *fatalWatch) Tracef(string, ...any)  {}

// URL lists every node's client URL, comma-separated: what --nats-url takes.
func (c *Cluster) URL() string {
	urls := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		urls[i] = n.client
	}
	return strings.Join(urls, ",")
}

// ClientURL is node i's client URL.
func (c *Cluster) ClientURL(i int) string { return c.nodes[i].client }

// Name is node i's server name ("n1", ...).
func (c *Cluster) Name(i int) string { return c.nodes[i].name }

// Len is the number of nodes, running or not.
func (c *Cluster) Len() int { return len(c.nodes) }

// Server is node i's server, nil while it is stopped.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].srv
}

// Stop ends node i at once; its store stays for Restart.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	srv := c.nodes[i].srv
	c.nodes[i].srv = nil
	c.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// Restart starts a stopped node again on its ports with its store.
func (c *Cluster) Restart(i int) error {
	if c.Server(i) != nil {
		return fmt.Errorf("natscluster: %s is running", c.nodes[i].name)
	}
	var err error
	// The ports were just released; another socket may hold them for a moment.
	for attempt := 0; attempt < 20; attempt++ {
		if err = c.startNode(i); err == nil || !strings.Contains(err.Error(), "address already in use") {
			return err
		}
		time.Sleep(100 * time.Millisecond) // back off before binding again
	}
	return err
}

// WaitReady waits until every running node reports JetStream healthy: a meta leader is
// elected and the node is current with it and with its streams.
func (c *Cluster) WaitReady(ctx context.Context) error {
	for {
		var bad []string
		for i, n := range c.nodes {
			srv := c.Server(i)
			if srv == nil {
				continue
			}
			if h := srv.Healthz(&server.HealthzOptions{}); h.Status != "ok" {
				bad = append(bad, fmt.Sprintf("%s: %s", n.name, h.Error))
			}
		}
		if len(bad) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("natscluster: not ready: %s", strings.Join(bad, "; "))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// LocalStream is node i's own replica of stream (in any account): its state as that node
// stores it, which may lag the leader's. ok is false when the node is stopped or holds no
// replica.
func (c *Cluster) LocalStream(i int, stream string) (state server.StreamState, ok bool) {
	srv := c.Server(i)
	if srv == nil {
		return state, false
	}
	jsz, err := srv.Jsz(&server.JSzOptions{Accounts: true, Streams: true})
	if err != nil {
		return state, false
	}
	for _, a := range jsz.AccountDetails {
		for _, sd := range a.Streams {
			if sd.Name == stream {
				return sd.State, true
			}
		}
	}
	return state, false
}

// Close stops every node.
func (c *Cluster) Close() {
	for i := range c.nodes {
		c.Stop(i)
	}
}

// reservations hold the listeners of ports picked for nodes until each node binds them.
type reservations struct {
	byNode map[int][]net.Listener
}

func (r *reservations) reserve(node int, host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("natscluster: free port: %w", err)
	}
	if r.byNode == nil {
		r.byNode = map[int][]net.Listener{}
	}
	r.byNode[node] = append(r.byNode[node], l)
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (r *reservations) releaseNode(node int) {
	for _, l := range r.byNode[node] {
		l.Close()
	}
	delete(r.byNode, node)
}

func (r *reservations) release() {
	for node := range r.byNode {
		r.releaseNode(node)
	}
}
