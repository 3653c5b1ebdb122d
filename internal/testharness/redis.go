package testharness

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// redisPackage is the Debian package that provides redis-server.
const redisPackage = "redis-server"

// portAttempts is how many ports a server start tries when the chosen port
// turns out to be taken by someone else.
const portAttempts = 3

// RedisServer is a redis-server process listening on 127.0.0.1 with
// persistence off (save "", appendonly no), so its data lives only in
// memory: Kill or Stop loses it.
type RedisServer struct {
	// Addr is the server address, "127.0.0.1:PORT".
	Addr string
	// Dir is the server folder: its redis.conf, redis.log and, for
	// cluster nodes, nodes.conf.
	Dir string

	proc *process
}

// Redis starts a redis-server on a free port of 127.0.0.1, with its
// configuration and log in t.TempDir(), and waits until it answers PING.
// The server is killed when the test and its subtests end.
func Redis(t testing.TB) *RedisServer {
	t.Helper()
	s, err := startRedis(t.TempDir(), nil)
	if err != nil {
		failStart(t, "redis-server", err)
	}
	t.Cleanup(s.Kill)
	return s
}

// Kill sends SIGKILL to the server (and its process group) and waits for it
// to exit. Its data is lost. Kill on a stopped server does nothing.
func (s *RedisServer) Kill() {
	s.proc.kill()
}

// Stop shuts the server down with SIGTERM (without saving, as persistence
// is off), and kills it if it has not exited after a few seconds. Stop on a
// stopped server does nothing.
func (s *RedisServer) Stop() {
	s.proc.stop()
}

// Restart starts the server again on the same port, with the same folder
// and configuration, and waits until it answers PING. A running server is
// stopped first. As persistence is off, the restarted server is empty
// (cluster nodes keep their cluster configuration in nodes.conf).
func (s *RedisServer) Restart(t testing.TB) {
	t.Helper()
	s.proc.stop()
	if err := s.start(); err != nil {
		t.Fatalf("testharness: restart redis-server on %s: %v", s.Addr, err)
	}
}

// start starts the process and waits until it answers PING.
func (s *RedisServer) start() error {
	if err := s.proc.start(); err != nil {
		return err
	}
	return s.proc.waitReady(func() error { return redisPing(s.Addr) })
}

// startRedis writes a redis.conf in dir and starts redis-server with it on a
// free port, retrying on another port if the chosen one is taken. extra
// returns additional configuration lines; it is called once per attempt.
func startRedis(dir string, extra func() ([]string, error)) (*RedisServer, error) {
	bin, err := lookBinary("redis-server", redisPackage)
	if err != nil {
		return nil, err
	}
	confPath := filepath.Join(dir, "redis.conf")
	var lastErr error
	for range portAttempts {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		conf := []string{
			"port " + strconv.Itoa(port),
			"bind 127.0.0.1",
			"protected-mode no",
			`save ""`,
			"appendonly no",
			"daemonize no",
			`logfile ""`,
			"dir " + strconv.Quote(dir),
		}
		if extra != nil {
			lines, err := extra()
			if err != nil {
				return nil, err
			}
			conf = append(conf, lines...)
		}
		if err := os.WriteFile(confPath, []byte(strings.Join(conf, "\n")+"\n"), 0o644); err != nil {
			return nil, fmt.Errorf("write redis config: %w", err)
		}
		s := &RedisServer{
			Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			Dir:  dir,
			proc: &process{
				name:    "redis-server",
				path:    bin,
				args:    []string{confPath},
				dir:     dir,
				logPath: filepath.Join(dir, "redis.log"),
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

// redisPing sends a RESP PING to addr and expects +PONG.
func redisPing(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return fmt.Errorf("set deadline: %w", err)
	}
	if _, err := conn.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return fmt.Errorf("send PING to %s: %w", addr, err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read PING reply from %s: %w", addr, err)
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING to %s answered %q", addr, strings.TrimSpace(line))
	}
	return nil
}
