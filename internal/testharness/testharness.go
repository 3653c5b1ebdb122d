// Package testharness starts real servers (Redis, a Redis Cluster,
// PostgreSQL) for tests: each one runs as a child process, listens on a free
// port on 127.0.0.1 and keeps its files in a temporary folder. There are no
// mocks here.
//
// Every constructor takes a testing.TB and registers t.Cleanup to stop the
// server and remove its folder, so a test only writes:
//
//	rdb := testharness.Redis(t)
//	client := redis.NewClient(&redis.Options{Addr: rdb.Addr})
//
// # Binaries
//
// The servers come from Debian packages (bookworm): redis-server (package
// redis-server) and PostgreSQL's initdb/postgres (package postgresql, looked
// for in /usr/lib/postgresql/<version>/bin first, then in PATH). Run
// scripts/install-test-deps.sh to install them. When a binary is missing the
// test is skipped, unless the environment variable CI is non-empty, in which
// case the test fails: CI must never silently skip these tests.
//
// # Processes
//
// Each server runs in its own process group (Setpgid) and gets SIGKILL if
// the test binary dies (Pdeathsig). Kill and the cleanups send SIGKILL to
// the group and to the server's children (PostgreSQL backends leave the
// group) and wait until they are gone, so no server outlives its test and
// its port is free again when Kill returns. A server's stdout and stderr go
// to a log file in its folder; when a server fails to start, the error
// includes the end of that log. The package relies on Linux (Pdeathsig,
// /proc).
//
// # Shared servers
//
// Starting PostgreSQL costs about a second, so SharedPostgres and
// SharedRedis start one server per test binary, on first use, and keep it
// until the end of the binary. A package that uses them must stop them from
// its TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testharness.Main(m)) }
//
// # Root
//
// PostgreSQL refuses to run as root. When the tests run as root, initdb and
// postgres run as the "postgres" system user (created by the Debian
// postgresql package) through syscall.Credential, and their folder is
// created under os.TempDir() and owned by that user.
package testharness

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds how long a server may take to become ready.
const startTimeout = 30 * time.Second

// stopTimeout bounds a graceful stop before the process group is killed.
const stopTimeout = 10 * time.Second

// FreePort returns a TCP port on 127.0.0.1 that was free when it was asked
// for. Another process may take it before the caller binds it, so servers
// started by this package retry with a new port when their port is taken.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatalf("testharness: %v", err)
	}
	return port
}

// freePort asks the kernel for a free port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// errMissing reports a server binary that is not installed.
type errMissing struct {
	binary, pkg string
}

func (e *errMissing) Error() string {
	return fmt.Sprintf("%s not found: install the Debian package %q (scripts/install-test-deps.sh does it)", e.binary, e.pkg)
}

// missingDependency applies the rule for binaries that are not installed:
// with the environment variable CI set (non-empty) the test fails, otherwise
// it is skipped; both with the same message naming the Debian package.
func missingDependency(t testing.TB, err *errMissing) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("testharness: %v", err)
	}
	t.Skipf("testharness: %v", err)
}

// failStart stops the test because a server could not be started: a
// missing binary follows missingDependency, anything else is t.Fatalf.
func failStart(t testing.TB, what string, err error) {
	t.Helper()
	var missing *errMissing
	if errors.As(err, &missing) {
		missingDependency(t, missing)
	}
	t.Fatalf("testharness: start %s: %v", what, err)
}

// lookBinary finds name in PATH.
func lookBinary(name, pkg string) (string, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return "", &errMissing{binary: name, pkg: pkg}
	}
	return path, nil
}

// process is one server child process. Its methods are safe for concurrent
// use; start may be called again after the process exited.
type process struct {
	name     string              // for messages, e.g. "redis-server"
	path     string              // binary
	args     []string            // arguments
	dir      string              // working directory
	logPath  string              // stdout+stderr, appended across restarts
	cred     *syscall.Credential // run as another user, or nil
	stopSig  syscall.Signal      // graceful stop signal
	mu       sync.Mutex          // guards the fields below
	cmd      *exec.Cmd           // running process, or nil
	done     chan struct{}       // closed when cmd has been waited for
	logStart int64               // log size when cmd was started
}

// start starts the process. It does not wait for readiness.
func (p *process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("%s is already running (pid %d)", p.name, p.cmd.Process.Pid)
		}
	}
	logFile, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open %s log: %w", p.name, err)
	}
	defer logFile.Close() // the child keeps its own copy
	var logStart int64
	if fi, err := logFile.Stat(); err == nil {
		logStart = fi.Size()
	}
	cmd := exec.Command(p.path, p.args...)
	cmd.Dir = p.dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// Kill the server if the test binary dies without cleaning up
		// (e.g. a test timeout panic). Go sets it after the credential
		// change, so it also holds for servers run as another user.
		Pdeathsig:  syscall.SIGKILL,
		Credential: p.cred,
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	p.cmd, p.done, p.logStart = cmd, done, logStart
	return nil
}

// exited returns a channel closed when the current process has exited, or
// nil when it was never started.
func (p *process) exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// running reports whether the process has been started and not exited.
func (p *process) running() bool {
	done := p.exited()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// current returns the process started last and its exit channel.
func (p *process) current() (*exec.Cmd, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd, p.done
}

// kill sends SIGKILL to the process, its process group and its children,
// and waits until they are gone, so that their ports and shared memory are
// free when it returns. Children are included because some servers move
// them to groups of their own (PostgreSQL backends call setsid): the group
// is stopped first (SIGSTOP) so that no child can be forked unseen.
func (p *process) kill() {
	cmd, done := p.current()
	if cmd == nil {
		return
	}
	pgid := cmd.Process.Pid
	select {
	case <-done:
		// Already exited; a member of its group may have survived it.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		waitGone(pgid, nil)
		return
	default:
	}
	_ = syscall.Kill(-pgid, syscall.SIGSTOP)
	children := descendants(pgid)
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	for _, pid := range children {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	<-done
	waitGone(pgid, children)
}

// stop asks the process to stop with its stop signal (SIGTERM unless set),
// and kills it if it has not exited within stopTimeout.
func (p *process) stop() {
	cmd, done := p.current()
	if cmd == nil {
		return
	}
	sig := p.stopSig
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	select {
	case <-done:
	default:
		_ = syscall.Kill(cmd.Process.Pid, sig)
		select {
		case <-done:
		case <-time.After(stopTimeout):
		}
	}
	p.kill() // the leftovers, if any
}

// descendants returns the pids of the children, grandchildren, etc. of
// process pid, read from /proc.
func descendants(pid int) []int {
	children := map[int][]int{}
	for _, st := range procStats() {
		children[st.ppid] = append(children[st.ppid], st.pid)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		next := children[queue[0]]
		queue = append(queue[1:], next...)
		out = append(out, next...)
	}
	return out
}

// waitGone waits, up to stopTimeout, until process group pgid and the
// processes pids have no live (non-zombie) member left. Orphans may stay
// zombies for a while if init is slow to reap them; they hold no resources.
func waitGone(pgid int, pids []int) {
	deadline := time.Now().Add(stopTimeout)
	for time.Now().Before(deadline) {
		alive := false
		for _, st := range procStats() {
			if st.state != "Z" && (st.pgrp == pgid || slices.Contains(pids, st.pid)) {
				alive = true
				break
			}
		}
		if !alive {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// procStat is the start of /proc/<pid>/stat.
type procStat struct {
	pid, ppid, pgrp int
	state           string
}

// procStats reads /proc/<pid>/stat of every process (Linux only). It
// returns nil when /proc cannot be read.
func procStats() []procStat {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []procStat
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		// "pid (comm) state ppid pgrp ...": comm may hold spaces and
		// parentheses, so parse after its last ')'.
		i := bytes.LastIndexByte(data, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(data[i+1:]))
		if len(f) < 3 {
			continue
		}
		ppid, err1 := strconv.Atoi(f[1])
		pgrp, err2 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, procStat{pid: pid, ppid: ppid, pgrp: pgrp, state: f[0]})
	}
	return out
}

// logTail returns the last lines of the process log, for error messages.
func (p *process) logTail() string {
	return tailFile(p.logPath, 30)
}

// tailFile returns the last n lines of a file, or a note that it could not
// be read.
func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	data = bytes.TrimRight(data, "\n")
	lines := strings.Split(string(data), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// startError wraps err with the end of the process log.
func (p *process) startError(err error) error {
	return fmt.Errorf("%w\n--- last lines of %s ---\n%s", err, p.logPath, p.logTail())
}

// waitReady calls ready with a short backoff until it succeeds, the process
// exits, or startTimeout passes. On failure the error includes the log
// tail.
func (p *process) waitReady(ready func() error) error {
	deadline := time.Now().Add(startTimeout)
	backoff := 5 * time.Millisecond
	done := p.exited()
	for {
		err := ready()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return p.startError(fmt.Errorf("%s exited before it was ready: %w", p.name, err))
		default:
		}
		if time.Now().After(deadline) {
			p.kill()
			return p.startError(fmt.Errorf("%s not ready after %v: %w", p.name, startTimeout, err))
		}
		select {
		case <-done:
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 200*time.Millisecond)
	}
}

// portInUse reports whether the process log says its port was taken, in
// which case the caller may retry on another port.
func (p *process) portInUse() bool {
	p.mu.Lock()
	start := p.logStart
	p.mu.Unlock()
	data, err := os.ReadFile(p.logPath)
	if err != nil || int64(len(data)) < start {
		return false
	}
	return bytes.Contains(data[start:], []byte("in use"))
}
