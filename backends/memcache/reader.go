package memcachebackend

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

// reader is the multi-get of a backend that knows its servers (Open): a
// "gets" for keys that all live on one server, sent and read in the
// caller's goroutine over connections of its own. gomemcache's GetMulti
// always reads in a goroutine per server, even for one, and on a busy
// machine the hand-offs to and from it cost as much as the round trip
// itself: the read of a region hit (its entry and the region's record, on
// one server) would take twice as long as a gomemcache Get. Keys spread
// over several servers still go through gomemcache's GetMulti, which asks
// the servers in parallel. Every other operation is gomemcache's.
type reader struct {
	servers *memcache.ServerList
	timeout time.Duration // socket deadline of each read
	maxIdle int

	mu     sync.Mutex
	idle   map[string][]*readConn // guarded by mu; by server address
	closed bool                   // guarded by mu
}

// readConn is one connection of the reader.
type readConn struct {
	addr string
	nc   net.Conn
	rw   *bufio.ReadWriter
}

// server returns the address of the server holding every key, or false
// when they are spread over several.
func (rd *reader) server(keys []string) (net.Addr, bool, error) {
	var first net.Addr
	for i, k := range keys {
		a, err := rd.servers.PickServer(k)
		if err != nil {
			return nil, false, err
		}
		if i == 0 {
			first = a
		} else if a.String() != first.String() {
			return nil, false, nil
		}
	}
	return first, true, nil
}

// conn returns an idle connection to addr, or dials one.
func (rd *reader) conn(addr net.Addr) (*readConn, error) {
	key := addr.String()
	rd.mu.Lock()
	if list := rd.idle[key]; len(list) > 0 {
		c := list[len(list)-1]
		rd.idle[key] = list[:len(list)-1]
		rd.mu.Unlock()
		return c, nil
	}
	rd.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), rd.timeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, addr.Network(), addr.String())
	if err != nil {
		return nil, err
	}
	return &readConn{addr: key, nc: nc, rw: bufio.NewReadWriter(bufio.NewReader(nc), bufio.NewWriter(nc))}, nil
}

// put keeps c for the next read, or closes it when enough are idle.
func (rd *reader) put(c *readConn) {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	if rd.closed || len(rd.idle[c.addr]) >= rd.maxIdle {
		_ = c.nc.Close()
		return
	}
	if rd.idle == nil {
		rd.idle = make(map[string][]*readConn)
	}
	rd.idle[c.addr] = append(rd.idle[c.addr], c)
}

// closeIdle closes every idle connection; close also keeps the reader from
// keeping any from then on (it still reads, dialling each time).
func (rd *reader) closeIdle(final bool) {
	rd.mu.Lock()
	idle := rd.idle
	rd.idle = nil
	if final {
		rd.closed = true
	}
	rd.mu.Unlock()
	for _, list := range idle {
		for _, c := range list {
			_ = c.nc.Close()
		}
	}
}

// errReply is an error line of memcached in answer to a gets.
type errReply string

func (e errReply) Error() string { return "memcached replied " + strconv.Quote(string(e)) }

// got is one key's answer to a multi-get: its value (nil: missing) and its
// CAS id.
type got struct {
	value []byte
	cas   uint64
}

// gets reads keys, all on the server addr, with one gets, and returns each
// key's answer, index for index. A connection that failed in any way is
// closed, as what it would read next is unknown.
func (rd *reader) gets(addr net.Addr, keys []string) ([]got, error) {
	c, err := rd.conn(addr)
	if err != nil {
		return nil, err
	}
	out, err := c.gets(keys, rd.timeout)
	if err != nil {
		_ = c.nc.Close()
		return nil, err
	}
	rd.put(c)
	return out, nil
}

var (
	valuePrefix = []byte("VALUE ")
	endLine     = []byte("END\r\n")
	crlf        = []byte("\r\n")
)

// gets sends one gets for keys and reads the answer.
func (c *readConn) gets(keys []string, timeout time.Duration) ([]got, error) {
	if err := c.nc.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	w := c.rw.Writer
	_, _ = w.WriteString("gets")
	for _, k := range keys {
		_ = w.WriteByte(' ')
		_, _ = w.WriteString(k)
	}
	_, _ = w.Write(crlf)
	if err := w.Flush(); err != nil {
		return nil, err
	}
	out := make([]got, len(keys))
	for {
		line, err := c.rw.ReadSlice('\n')
		if err != nil {
			return nil, err
		}
		if bytes.Equal(line, endLine) {
			return out, nil
		}
		if !bytes.HasPrefix(line, valuePrefix) || !bytes.HasSuffix(line, crlf) {
			return nil, errReply(bytes.TrimRight(line, "\r\n"))
		}
		key, size, cas, ok := parseValueLine(line[len(valuePrefix) : len(line)-2])
		if !ok {
			return nil, fmt.Errorf("memcachebackend: malformed line in a gets reply: %q", line)
		}
		// Matched before the value is read: line is only valid until then.
		at := -1
		for i, k := range keys {
			if out[i].value == nil && string(key) == k {
				at = i
				break
			}
		}
		val := make([]byte, size+2)
		if _, err := io.ReadFull(c.rw, val); err != nil {
			return nil, err
		}
		if !bytes.HasSuffix(val, crlf) {
			return nil, errors.New("memcachebackend: malformed value in a gets reply")
		}
		val = val[:size:size]
		if at < 0 { // memcached answers a key asked for twice twice
			return nil, fmt.Errorf("memcachebackend: gets reply for a key not asked for")
		}
		out[at] = got{value: val, cas: cas}
	}
}

// parseValueLine parses "<key> <flags> <bytes> <cas>", the rest of a VALUE
// line; key aliases rest.
func parseValueLine(rest []byte) (key []byte, size int, cas uint64, ok bool) {
	var f [4][]byte
	for i := range f {
		if i == len(f)-1 {
			f[i] = rest
			break
		}
		sp := bytes.IndexByte(rest, ' ')
		if sp < 0 {
			return nil, 0, 0, false
		}
		f[i], rest = rest[:sp], rest[sp+1:]
	}
	n, ok1 := parseUint(f[2])
	c, ok2 := parseUint(f[3])
	if !ok1 || !ok2 || n > 1<<31 {
		return nil, 0, 0, false
	}
	return f[0], int(n), c, true
}

// parseUint parses a decimal uint64 without allocating.
func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (1<<64-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}
