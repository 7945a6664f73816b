package clustertest

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// gate is a loopback TCP proxy in front of a server that can be closed: while it is down its
// port refuses connections and open ones are cut, which is what clients see of a server that
// died. (Restarting influxd itself costs seconds of CPU compiling Flux, more than a minute on a
// loaded CI machine; the gate's outage starts and ends on the second.)
type gate struct {
	t      *testing.T
	target string
	addr   string
	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
}

func newGate(t *testing.T, target string) *gate {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{t: t, target: target, addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}}
	g.serve(ln)
	t.Cleanup(g.down)
	return g
}

// URL is the gate's address as an http:// URL.
func (g *gate) URL() string { return "http://" + g.addr }

func (g *gate) serve(ln net.Listener) {
	g.mu.Lock()
	g.ln = ln
	g.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", g.target)
			if err != nil {
				c.Close()
				continue
			}
			g.mu.Lock()
			g.conns[c], g.conns[up] = struct{}{}, struct{}{}
			g.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				io.Copy(dst, src)
				dst.Close()
				src.Close()
				g.mu.Lock()
				delete(g.conns, dst)
				delete(g.conns, src)
				g.mu.Unlock()
			}
			go pipe(c, up)
			go pipe(up, c)
		}
	}()
}

// down closes the port and cuts every open connection.
func (g *gate) down() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ln != nil {
		g.ln.Close()
		g.ln = nil
	}
	for c := range g.conns {
		c.Close()
	}
}

// up opens the port again.
func (g *gate) up() {
	for attempt := 0; ; attempt++ {
		ln, err := net.Listen("tcp", g.addr)
		if err == nil {
			g.serve(ln)
			return
		}
		if attempt > 50 || !strings.Contains(err.Error(), "address already in use") {
			g.t.Fatalf("gate: reopen %s: %v", g.addr, err)
		}
		time.Sleep(100 * time.Millisecond) // the port was just released
	}
}
