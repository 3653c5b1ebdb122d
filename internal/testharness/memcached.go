package testharness

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// memcachedPackage is the Debian package that provides memcached.
const memcachedPackage = "memcached"

// MemcachedServer is a memcached process listening on 127.0.0.1 (TCP only,
// UDP off). memcached keeps everything in memory: Kill, Stop and Restart
// lose every item.
type MemcachedServer struct {
	// Addr is the server address, "127.0.0.1:PORT".
	Addr string
	// Dir is the server folder; it holds memcached.log.
	Dir string

	proc *process
}

// MemcachedOption configures a server started by Memcached.
type MemcachedOption func(*memcachedConfig)

type memcachedConfig struct {
	memoryMB int
	itemSize string
}

// WithMemcachedMemory sets the server's memory for items in megabytes
// (memcached -m; the default here is 64).
func WithMemcachedMemory(mb int) MemcachedOption {
	return func(c *memcachedConfig) { c.memoryMB = mb }
}

// WithMemcachedItemSize sets the largest item the server stores (memcached
// -I, e.g. "1m", the default, or "512k").
func WithMemcachedItemSize(size string) MemcachedOption {
	return func(c *memcachedConfig) { c.itemSize = size }
}

// Memcached starts a memcached on a free port of 127.0.0.1, with its log in
// t.TempDir(), and waits until it answers the version command. The server
// is killed when the test and its subtests end. As for every server of this
// package, a missing binary skips the test, or fails it when CI is set.
//
// memcached refuses to run as root without -u: when the tests run as root
// it is given "-u root", so that it keeps the same user (and the same
// rights on its folder) as the harness's other servers.
func Memcached(t testing.TB, opts ...MemcachedOption) *MemcachedServer {
	t.Helper()
	cfg := memcachedConfig{memoryMB: 64}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := startMemcached(t.TempDir(), cfg)
	if err != nil {
		failStart(t, "memcached", err)
	}
	t.Cleanup(s.Kill)
	return s
}

// Kill sends SIGKILL to the server and waits for it to exit; its items are
// lost. Kill on a stopped server does nothing. A paused server is killed
// too.
func (s *MemcachedServer) Kill() {
	s.proc.kill()
}

// Stop shuts the server down with SIGTERM, and kills it if it has not
// exited after a few seconds. A paused server is resumed first, so that it
// can handle the signal. Stop on a stopped server does nothing.
func (s *MemcachedServer) Stop() {
	s.Resume()
	s.proc.stop()
}

// Restart starts the server again on the same port and waits until it
// answers. A running server is stopped first. The restarted server is
// empty: memcached keeps nothing across a restart.
func (s *MemcachedServer) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		t.Fatalf("testharness: restart memcached on %s: %v", s.Addr, err)
	}
}

// Start starts a server that was killed or stopped again, on the same
// port, and waits until it answers; unlike Restart it reports a failure
// instead of failing the test, so it may be called from any goroutine.
// The started server is empty.
func (s *MemcachedServer) Start() error {
	if s.proc.running() {
		return fmt.Errorf("memcached on %s is running", s.Addr)
	}
	if err := s.start(); err != nil {
		return fmt.Errorf("testharness: start memcached on %s: %w", s.Addr, err)
	}
	return nil
}

// Pause stops the server process with SIGSTOP: it keeps its port and its
// connections, and the kernel still accepts new ones, but nothing is
// answered until Resume. That is a server that hangs, not one that is down.
//
// It returns once every thread of the server is stopped: kill returns
// before the signal has stopped the process, and a worker thread still
// running could answer the next command.
func (s *MemcachedServer) Pause() {
	s.signal(syscall.SIGSTOP)
	if pid := s.Pid(); pid != 0 {
		waitStopped(pid)
	}
}

// waitStopped waits, for up to 5 s, until every thread of process pid is in
// the stopped state ('T' in /proc/PID/task/TID/stat).
func waitStopped(pid int) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			return // gone, or no /proc: nothing to wait for
		}
		stopped := true
		for _, task := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
			if err != nil {
				continue
			}
			// The state follows the command's closing parenthesis.
			if i := strings.LastIndexByte(string(b), ')'); i < 0 || i+2 >= len(b) || (b[i+2] != 'T' && b[i+2] != 't') {
				stopped = false
				break
			}
		}
		if stopped {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// Resume lets a paused server run again (SIGCONT). Resume on a server that
// is not paused does nothing.
func (s *MemcachedServer) Resume() {
	s.signal(syscall.SIGCONT)
}

// signal sends sig to the running server, if any.
func (s *MemcachedServer) signal(sig syscall.Signal) {
	if !s.proc.running() {
		return
	}
	cmd, _ := s.proc.current()
	_ = syscall.Kill(cmd.Process.Pid, sig)
}

// Pid returns the process id of the running server, or 0.
func (s *MemcachedServer) Pid() int {
	if !s.proc.running() {
		return 0
	}
	cmd, _ := s.proc.current()
	return cmd.Process.Pid
}

// start starts the process and waits until it answers.
func (s *MemcachedServer) start() error {
	if err := s.proc.start(); err != nil {
		return err
	}
	return s.proc.waitReady(func() error { return memcachedVersion(s.Addr) })
}

// startMemcached starts memcached on a free port, retrying on another port
// if the chosen one is taken.
func startMemcached(dir string, cfg memcachedConfig) (*MemcachedServer, error) {
	bin, err := lookMemcached()
	if err != nil {
		return nil, err
	}
	var lastErr error
	for range portAttempts {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		args := []string{
			"-l", "127.0.0.1",
			"-p", strconv.Itoa(port),
			"-U", "0", // no UDP
			"-m", strconv.Itoa(cfg.memoryMB),
			"-c", "4096", // connections: the stampede tests open many
		}
		if cfg.itemSize != "" {
			args = append(args, "-I", cfg.itemSize)
		}
		if os.Geteuid() == 0 {
			args = append(args, "-u", "root")
		}
		s := &MemcachedServer{
			Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			Dir:  dir,
			proc: &process{
				name:    "memcached",
				path:    bin,
				args:    args,
				dir:     dir,
				logPath: filepath.Join(dir, "memcached.log"),
			},
		}
		lastErr = s.start()
		if lastErr == nil {
			return s, nil
		}
		s.proc.kill()
		if !s.proc.portInUse() {
			return nil, lastErr
		}
	}
	return nil, lastErr
}

// lookMemcached finds memcached: Debian installs it in /usr/bin, which is
// looked at first, as PATH may not include it.
func lookMemcached() (string, error) {
	const debian = "/usr/bin/memcached"
	if fi, err := os.Stat(debian); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
		return debian, nil
	}
	return lookBinary("memcached", memcachedPackage)
}

// memcachedVersion sends the version command to addr and expects a VERSION
// reply.
func memcachedVersion(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return fmt.Errorf("set deadline: %w", err)
	}
	if _, err := conn.Write([]byte("version\r\n")); err != nil {
		return fmt.Errorf("send version to %s: %w", addr, err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read version reply from %s: %w", addr, err)
	}
	if !strings.HasPrefix(line, "VERSION ") {
		return fmt.Errorf("version to %s answered %q", addr, strings.TrimSpace(line))
	}
	return nil
}
