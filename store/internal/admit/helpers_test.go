package admit_test

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/store/internal/admit"
)

type dialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

func mustNew(t testing.TB, cfg admit.Config) *admit.Controller {
	t.Helper()
	c, err := admit.New(cfg)
	require.NoError(t, err)
	return c
}

// eventually waits until cond holds.
func eventually(t testing.TB, cond func() bool, msg string) {
	t.Helper()
	require.Eventually(t, cond, 10*time.Second, time.Millisecond, msg)
}

// waitingIs waits until c has n dials queued.
func waitingIs(t testing.TB, c *admit.Controller, n int) {
	t.Helper()
	eventually(t, func() bool { return c.Stats().Waiting == n }, "queued dials")
}

// requireIdle checks that c holds no slot, queues no dial and tracks no key.
func requireIdle(t testing.TB, c *admit.Controller) {
	t.Helper()
	s := c.Stats()
	require.Zero(t, s.Open, "open slots")
	require.Zero(t, s.Waiting, "waiting dials")
	require.Zero(t, s.Keys, "tracked keys")
}

// pipeDial dials one end of a net.Pipe; the other end is dropped.
func pipeDial(context.Context, string, string) (net.Conn, error) {
	client, _ := net.Pipe()
	return client, nil
}

// dialed is the result of a dial, delivered over a channel.
type dialed struct {
	conn net.Conn
	err  error
}

// goDial starts dial in a goroutine and returns where its result arrives.
func goDial(ctx context.Context, dial dialFunc) <-chan dialed {
	ch := make(chan dialed, 1)
	go func() {
		conn, err := dial(ctx, "tcp", "pipe")
		ch <- dialed{conn, err}
	}()
	return ch
}

// server is a loopback TCP listener that counts the connections it holds.
// A client ends a connection with hangUp, which waits until the server has
// counted it closed, so the server's count never lags behind the client's
// sockets.
type server struct {
	ln     net.Listener
	reject bool // close every connection as soon as it is accepted

	mu       sync.Mutex // guards the fields below
	open     int
	max      int
	accepted int
	conns    map[net.Conn]struct{}

	wg sync.WaitGroup
}

func newServer(t testing.TB, reject bool) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &server{ln: ln, reject: reject, conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *server) addr() string { return s.ln.Addr().String() }

// dial dials the server, whatever address it is given.
func (s *server) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, s.addr())
}

func (s *server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.accepted++
		if s.reject {
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.open++
		s.max = max(s.max, s.open)
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serve(c)
	}
}

func (s *server) serve(c net.Conn) {
	defer s.wg.Done()
	counted := true
	done := func() {
		if counted {
			counted = false
			s.mu.Lock()
			s.open--
			s.mu.Unlock()
		}
	}
	defer func() {
		done()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	b := make([]byte, 1)
	for {
		if _, err := c.Read(b); err != nil {
			return
		}
		done()
		if _, err := c.Write(b); err != nil {
			return
		}
	}
}

func (s *server) stats() (open, maxOpen, accepted int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open, s.max, s.accepted
}

// hangUp tells the server that c ends, waits for its acknowledgement, and
// closes c.
func hangUp(c net.Conn) error {
	defer c.Close()
	if _, err := c.Write([]byte{'x'}); err != nil {
		return err
	}
	_, err := io.ReadFull(c, make([]byte, 1))
	return err
}

// pool imitates a pgxpool.Pool wired to a Controller: it keeps idle
// connections, touches on acquire, yields on release and evicts on request.
type pool struct {
	key  string
	c    *admit.Controller
	dial dialFunc

	mu   sync.Mutex // guards idle
	idle []idleConn
}

type idleConn struct {
	net.Conn
	created time.Time
}

func newPool(t testing.TB, c *admit.Controller, key string, dial dialFunc) *pool {
	t.Helper()
	p := &pool{key: key, c: c, dial: c.Dial(key, dial)}
	unregister := c.Register(key, p.evict)
	t.Cleanup(func() {
		unregister()
		p.closeIdle()
	})
	return p
}

func (p *pool) acquire(ctx context.Context) (idleConn, error) {
	p.c.Touch(p.key)
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		ic := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return ic, nil
	}
	p.mu.Unlock()
	conn, err := p.dial(admit.WithRequest(ctx), "tcp", "pool")
	if err != nil {
		return idleConn{}, err
	}
	return idleConn{conn, time.Now()}, nil
}

func (p *pool) release(ic idleConn) { p.put(ic) }

func (p *pool) put(ic idleConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.idle = append(p.idle, ic)
}

func (p *pool) idleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

func (p *pool) evict(minAge time.Duration) bool {
	p.mu.Lock()
	for i, ic := range p.idle {
		if time.Since(ic.created) >= minAge {
			p.idle = append(p.idle[:i:i], p.idle[i+1:]...)
			p.mu.Unlock()
			hangUp(ic)
			return true
		}
	}
	p.mu.Unlock()
	return false
}

func (p *pool) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, ic := range idle {
		hangUp(ic)
	}
}
