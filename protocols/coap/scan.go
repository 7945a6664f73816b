package coap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/tributary-iot/tributary/devices"
)

// The "All CoAP Nodes" multicast addresses (RFC 7252 §12.8).
const (
	AllCoAPNodesIPv4 = "224.0.1.187"
	AllCoAPNodesIPv6 = "ff02::fd"
)

// ScanRequest says where and how long an active scan looks.
type ScanRequest struct {
	// Groups are the multicast addresses asked (default both All CoAP Nodes addresses).
	Groups []string `json:"groups,omitempty"`
	// Port is the port asked (default 5683).
	Port int `json:"port,omitempty"`
	// Interfaces names the network interfaces to send on (none: every up, multicast-capable
	// interface). A group is asked on each; interfaces without an address of its family are
	// passed over.
	Interfaces []string `json:"interfaces,omitempty"`
	// Timeout is how long answers are collected (default 2s, at most 60s).
	Timeout time.Duration `json:"-"`
	// Query is an optional RFC 6690 filter sent with the request, e.g. "rt=temperature*".
	Query string `json:"query,omitempty"`
}

// Scanner sends multicast GET /.well-known/core and collects the answers. It uses sockets of
// its own (an ephemeral port per address family), not the server's.
type Scanner struct {
	log *slog.Logger
}

// NewScanner builds a scanner.
func NewScanner(log *slog.Logger) *Scanner {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Scanner{log: log.With("component", "coap-scan")}
}

// Scan asks every group and returns one result per answering address, by address. Answers
// that come block-wise (a long /.well-known/core) are fetched whole with unicast GETs. An
// error means no group could be asked at all; groups that fail while others work are logged.
func (sc *Scanner) Scan(ctx context.Context, req ScanRequest) ([]devices.ScanResult, error) {
	if len(req.Groups) == 0 {
		req.Groups = []string{AllCoAPNodesIPv4, AllCoAPNodesIPv6}
	}
	if req.Port == 0 {
		req.Port = 5683
	}
	if req.Port < 1 || req.Port > 65535 {
		return nil, fmt.Errorf("port %d: want 1..65535", req.Port)
	}
	if req.Timeout == 0 {
		req.Timeout = 2 * time.Second
	}
	if req.Timeout < 0 || req.Timeout > time.Minute {
		return nil, fmt.Errorf("timeout %v: want up to 1m", req.Timeout)
	}
	ignore := coapnet.WithMulticastInterfaceError(func(iface *net.Interface, err error) {
		sc.log.Debug("multicast not sent on an interface", "interface", iface.Name, "err", err)
	})
	// One set of options per way of sending: every interface, or each one named.
	sends := [][]coapnet.MulticastOption{{ignore}}
	if len(req.Interfaces) > 0 {
		sends = nil
		for _, name := range req.Interfaces {
			iface, err := net.InterfaceByName(name)
			if err != nil {
				return nil, fmt.Errorf("interface %q: %w", name, err)
			}
			sends = append(sends, []coapnet.MulticastOption{coapnet.WithMulticastInterface(*iface), ignore})
		}
	}
	path := "/.well-known/core"
	for _, g := range req.Groups {
		ip := net.ParseIP(g)
		if ip == nil || !ip.IsMulticast() {
			return nil, fmt.Errorf("group %q is not a multicast IP address", g)
		}
	}

	var mu sync.Mutex
	found := map[string]*devices.ScanResult{}
	more := map[string]bool{} // addresses whose answer has further blocks
	var wg sync.WaitGroup
	type try struct {
		group string
		opts  []coapnet.MulticastOption
	}
	var tries []try
	for _, g := range req.Groups {
		for _, o := range sends {
			tries = append(tries, try{g, o})
		}
	}
	errs := make([]error, len(tries))
	for i, tr := range tries {
		wg.Go(func() {
			errs[i] = sc.ask(ctx, tr.group, req.Port, path, req.Query, req.Timeout, tr.opts, func(addr string, body []byte, hasMore bool) {
				mu.Lock()
				defer mu.Unlock()
				if _, ok := found[addr]; !ok {
					found[addr] = &devices.ScanResult{Address: addr, Links: string(body)}
					more[addr] = hasMore
				}
			})
		})
	}
	wg.Wait()
	failed := 0
	for i, err := range errs {
		if err != nil {
			failed++
			sc.log.Debug("multicast scan of a group failed", "group", tries[i].group, "err", err)
		}
	}
	if failed == len(tries) {
		return nil, fmt.Errorf("scan: %w", errors.Join(errs...))
	}
	out := make([]devices.ScanResult, 0, len(found))
	for addr, r := range found {
		if more[addr] {
			if full, err := fetchWhole(ctx, addr, path, req.Query); err == nil {
				r.Links = full
			} else {
				sc.log.Info("whole /.well-known/core not fetched", "address", addr, "err", err)
			}
		}
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b devices.ScanResult) int { return strings.Compare(a.Address, b.Address) })
	return out, nil
}

// ask sends one multicast GET and reports every answer until timeout.
func (sc *Scanner) ask(ctx context.Context, group string, port int, path, query string, timeout time.Duration, opts []coapnet.MulticastOption, answer func(addr string, body []byte, more bool)) error {
	network, listen := "udp4", "0.0.0.0:0"
	if strings.Contains(group, ":") {
		network, listen = "udp6", "[::]:0"
	}
	l, err := coapnet.NewListenUDP(network, listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", network, err)
	}
	defer l.Close()
	srv := udp.NewServer()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	defer func() {
		srv.Stop()
		<-done
	}()
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	receive := func(cc *udpClient.Conn, resp *pool.Message) {
		body, _ := resp.ReadBody()
		hasMore := false
		if b, err := resp.Options().GetUint32(message.Block2); err == nil && b&0x8 != 0 {
			hasMore = true
		}
		answer(cc.RemoteAddr().String(), body, hasMore)
	}
	addr := net.JoinHostPort(group, strconv.Itoa(port))
	if query == "" {
		return srv.Discover(rctx, addr, path, receive, opts...)
	}
	token, err := message.GetToken()
	if err != nil {
		return err
	}
	m := pool.NewMessage(rctx)
	if err := m.SetupGet(path, token, message.Option{ID: message.URIQuery, Value: []byte(query)}); err != nil {
		return fmt.Errorf("scan query %q: %w", query, err)
	}
	m.SetMessageID(int32(time.Now().UnixNano() & 0xffff))
	m.SetType(message.NonConfirmable)
	return srv.DiscoveryRequest(m, addr, receive, opts...)
}

// fetchWhole GETs path from addr with a fresh client, which assembles a block-wise answer.
func fetchWhole(ctx context.Context, addr, path, query string) (string, error) {
	cc, err := udp.Dial(addr)
	if err != nil {
		return "", err
	}
	defer cc.Close()
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var o []message.Option
	if query != "" {
		o = append(o, message.Option{ID: message.URIQuery, Value: []byte(query)})
	}
	resp, err := cc.Get(gctx, path, o...)
	if err != nil {
		return "", err
	}
	body, err := resp.ReadBody()
	return string(body), err
}
