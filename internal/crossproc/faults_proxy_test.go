package crossproc

import (
	"io"
	"net"
	"sync"
	"testing"
)

// cutProxy forwards TCP connections to a redis-server, and can be cut: Cut
// turns it into a black hole (connections stay open, nothing they send is
// answered, new connections are accepted and ignored), so a client behind
// it sees Redis hang rather than refuse; Restore closes the black-holed
// connections and forwards new ones again.
type cutProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu      sync.Mutex
	cut     bool                  // guarded by mu
	closed  bool                  // guarded by mu
	clients map[net.Conn]struct{} // guarded by mu: client-side connections
	uppers  map[net.Conn]struct{} // guarded by mu: connections to the target
}

// startCutProxy listens on a free port of 127.0.0.1 and forwards to target,
// until t ends.
func startCutProxy(t testing.TB, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	p := &cutProxy{ln: ln, target: target, clients: map[net.Conn]struct{}{}, uppers: map[net.Conn]struct{}{}}
	p.wg.Go(p.serve)
	t.Cleanup(p.close)
	return p
}

// Addr is the address clients connect to.
func (p *cutProxy) Addr() string { return p.ln.Addr().String() }

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			return
		}
		p.clients[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() { p.handle(c) })
	}
}

func (p *cutProxy) isCut() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cut
}

// handle forwards c to the target while the proxy is not cut; once cut,
// whatever c sends is read and dropped until c is closed (by Restore, by
// close, or by the client).
func (p *cutProxy) handle(c net.Conn) {
	defer func() {
		_ = c.Close()
		p.mu.Lock()
		delete(p.clients, c)
		p.mu.Unlock()
	}()
	if p.isCut() {
		_, _ = io.Copy(io.Discard, c)
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	p.mu.Lock()
	if p.cut || p.closed {
		p.mu.Unlock()
		_ = up.Close()
		_, _ = io.Copy(io.Discard, c)
		return
	}
	p.uppers[up] = struct{}{}
	p.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(c, up)
		if !p.isCut() {
			_ = c.Close() // the server closed: pass it on
		}
	}()
	_, _ = io.Copy(up, c)
	if p.isCut() {
		_, _ = io.Copy(io.Discard, c) // black hole until Restore closes c
	}
	_ = up.Close()
	_ = c.Close()
	<-done
	p.mu.Lock()
	delete(p.uppers, up)
	p.mu.Unlock()
}

// Cut makes the proxy a black hole: the connections to the target are
// closed, the clients' are kept open and never answered.
func (p *cutProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for up := range p.uppers {
		_ = up.Close()
	}
}

// Restore closes every client connection (they were black-holed) and
// forwards the connections made from now on.
func (p *cutProxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
	for c := range p.clients {
		_ = c.Close()
	}
}

func (p *cutProxy) close() {
	p.mu.Lock()
	p.closed = true
	_ = p.ln.Close()
	for c := range p.clients {
		_ = c.Close()
	}
	for up := range p.uppers {
		_ = up.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
