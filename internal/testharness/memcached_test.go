package testharness_test

import (
	"bufio"
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dogpile-go/dogpile/internal/testharness"
)

// memcachedCmd sends one command line to addr and returns the first reply
// line.
func memcachedCmd(addr, cmd string, timeout time.Duration) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte(cmd + "\r\n")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line), err
}

func TestMemcachedKillRestartPause(t *testing.T) {
	t.Parallel()
	srv := testharness.Memcached(t)
	if line, err := memcachedCmd(srv.Addr, "set k 0 0 1\r\nv", time.Second); err != nil || line != "STORED" {
		t.Fatalf("set: %q, %v", line, err)
	}
	pid := srv.Pid()

	srv.Pause()
	if _, err := memcachedCmd(srv.Addr, "version", 200*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a paused server answered: %v", err)
	}
	srv.Resume()
	if line, err := memcachedCmd(srv.Addr, "get k", time.Second); err != nil || line != "VALUE k 0 1" {
		t.Fatalf("get after Resume: %q, %v; want the item kept", line, err)
	}

	srv.Kill()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("memcached pid %d still exists after Kill (signal 0: %v)", pid, err)
	}
	addr := srv.Addr
	srv.Restart(t)
	if srv.Addr != addr || srv.Pid() == pid {
		t.Fatalf("Restart: %s pid %d, was %s pid %d", srv.Addr, srv.Pid(), addr, pid)
	}
	if line, err := memcachedCmd(srv.Addr, "get k", time.Second); err != nil || line != "END" {
		t.Fatalf("get after Kill+Restart: %q, %v; want nothing (data gone)", line, err)
	}

	srv.Pause()
	srv.Stop() // resumes first, then stops
	if _, err := memcachedCmd(srv.Addr, "version", time.Second); err == nil {
		t.Fatal("version answered after Stop")
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if line, err := memcachedCmd(srv.Addr, "version", time.Second); err != nil || !strings.HasPrefix(line, "VERSION ") {
		t.Fatalf("version after Start: %q, %v", line, err)
	}
}
