// Package tcpproxy is a TCP proxy on loopback for fault tests: it forwards
// every connection to a target address, and can cut the connections it
// carries at a moment a test chooses, so that a client loses a real
// connection (the server's answer never arrives) while the server goes on.
package tcpproxy

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy forwards the connections made to Addr to its target.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex // guards conns, closed and refuse
	conns  map[*pair]struct{}
	closed bool
	refuse bool
	wg     sync.WaitGroup
}

type pair struct{ client, server net.Conn }

// New starts a proxy on a free port of 127.0.0.1 to target (host:port),
// and stops it when tb's test ends.
func New(tb testing.TB, target string) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("tcpproxy: listen: %v", err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[*pair]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(p.Close)
	return p
}

// Addr is the proxy's address, host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Port is the proxy's port.
func (p *Proxy) Port() uint16 { return uint16(p.ln.Addr().(*net.TCPAddr).Port) }

// Conns is the number of connections the proxy carries now.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Cut closes every connection the proxy carries now, both sides, and
// returns how many it closed. New connections are accepted as before.
func (p *Proxy) Cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.conns)
	for c := range p.conns {
		_ = c.client.Close()
		_ = c.server.Close()
		delete(p.conns, c)
	}
	return n
}

// Partition cuts every connection, as Cut, and closes every new one at
// once until Heal: the network between client and server is down, so a
// client cannot reach the server even to cancel what it sent.
func (p *Proxy) Partition() int {
	p.mu.Lock()
	p.refuse = true
	p.mu.Unlock()
	return p.Cut()
}

// Heal ends a Partition: new connections are forwarded again.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.refuse = false
	p.mu.Unlock()
}

// Close stops accepting, cuts every connection and waits for the proxy's
// goroutines.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	_ = p.ln.Close()
	p.Cut()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.refuse
		p.mu.Unlock()
		if refuse {
			_ = client.Close()
			continue
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		c := &pair{client: client, server: server}
		p.mu.Lock()
		if p.closed || p.refuse {
			closed := p.closed
			p.mu.Unlock()
			_ = client.Close()
			_ = server.Close()
			if closed {
				return
			}
			continue
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, c.server, c.client)
		go p.pipe(c, c.client, c.server)
	}
}

// pipe copies from src to dst until either fails, then closes both.
func (p *Proxy) pipe(c *pair, dst, src net.Conn) {
	defer p.wg.Done()
	// It ends on a cut or a peer's close; either way the pair is done.
	_, _ = io.Copy(dst, src)
	_ = c.client.Close()
	_ = c.server.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}
