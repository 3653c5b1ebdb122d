// Package redisserver starts a real redis-server for the tests of the
// dogpileotel module, which cannot import the root module's
// internal/testharness (a module of its own may not import another's
// internal packages).
package redisserver

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Server is a redis-server on 127.0.0.1 with persistence off, its folder a
// test's temporary one.
type Server struct {
	// Addr is "127.0.0.1:PORT".
	Addr string

	t    testing.TB
	bin  string
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts a redis-server on a free port and waits until it answers
// PING; it is killed when the test ends. The test fails when redis-server
// is not installed (the Debian package redis-server; the root module's
// scripts/install-test-deps.sh installs it).
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redisserver: redis-server not found: install the Debian package redis-server: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redisserver: find a free port: %v", err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	s := &Server{Addr: addr, t: t, bin: bin, dir: t.TempDir()}
	t.Cleanup(s.Kill)
	s.start()
	return s
}

func (s *Server) start() {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(s.Addr)
	conf := strings.Join([]string{
		"port " + port, "bind 127.0.0.1", "protected-mode no", `save ""`, "appendonly no",
		"daemonize no", `logfile ""`, "dir " + strconv.Quote(s.dir),
	}, "\n") + "\n"
	confPath := filepath.Join(s.dir, "redis.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		s.t.Fatalf("redisserver: %v", err)
	}
	log, err := os.OpenFile(filepath.Join(s.dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatalf("redisserver: %v", err)
	}
	defer log.Close()
	cmd := exec.Command(s.bin, confPath)
	cmd.Dir, cmd.Stdout, cmd.Stderr = s.dir, log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("redisserver: start redis-server: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }() // ends with the process, which Kill ends
	s.cmd, s.done = cmd, done
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := ping(s.Addr); err == nil {
			return
		} else if time.Now().After(deadline) {
			s.Kill()
			b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			s.t.Fatalf("redisserver: redis-server on %s does not answer: %v\n%s", s.Addr, err, b)
		}
		select {
		case <-done:
			b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			s.t.Fatalf("redisserver: redis-server exited:\n%s", b)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Kill kills the server and waits for it to exit; its data is lost. It
// does nothing on a server that is not running.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart starts a killed server again, empty, on the same port.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.start()
}

// ping sends PING to addr and expects PONG.
func ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return fmt.Errorf("send PING: %w", err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read PING reply: %w", err)
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING reply %q", line)
	}
	return nil
}
