package testharness

import (
	"errors"
	"os"
	"sync"
	"testing"
)

// shared holds the servers shared by all tests of a test binary.
var shared struct {
	mu         sync.Mutex
	mainActive bool // Main is running the tests

	redisStarted bool // a start was attempted; redis/redisErr hold the result
	redis        *RedisServer
	redisErr     error

	pgStarted bool
	pg        *PostgresServer
	pgErr     error
}

// errNoMain is the failure of a shared server asked for outside Main.
var errNoMain = errors.New("shared servers need TestMain to call testharness.Main: func TestMain(m *testing.M) { os.Exit(testharness.Main(m)) }")

// Main runs the tests of a package and then stops the shared servers
// (SharedRedis, SharedPostgres) and removes their folders. It returns the
// exit code of m.Run for os.Exit. A test package that uses shared servers
// must call it from its TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testharness.Main(m)) }
//
// Without it, SharedRedis and SharedPostgres fail the test rather than leak
// a server.
func Main(m *testing.M) int {
	shared.mu.Lock()
	shared.mainActive = true
	shared.mu.Unlock()

	code := m.Run()

	shared.mu.Lock()
	defer shared.mu.Unlock()
	shared.mainActive = false
	if shared.redis != nil {
		shared.redis.Kill()
		_ = os.RemoveAll(shared.redis.Dir)
		shared.redis = nil
	}
	if shared.pg != nil {
		shared.pg.destroy()
		shared.pg = nil
	}
	shared.redisStarted, shared.redisErr = false, nil
	shared.pgStarted, shared.pgErr = false, nil
	return code
}

// SharedRedis returns the redis-server shared by all tests of the test
// binary, starting it on first use; Main stops it after the last test.
// Tests share its keyspace, so each should use its own keys (e.g. prefixed
// with t.Name()), and none may Kill, Stop or Restart it: use Redis(t) for
// that. Requires TestMain to call Main.
func SharedRedis(t testing.TB) *RedisServer {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.mainActive {
		t.Fatalf("testharness: SharedRedis: %v", errNoMain)
	}
	if !shared.redisStarted {
		shared.redisStarted = true
		shared.redis, shared.redisErr = startSharedRedis()
	}
	if shared.redisErr != nil {
		failStart(t, "shared redis-server", shared.redisErr)
	}
	return shared.redis
}

// startSharedRedis starts a redis-server in a folder of its own.
func startSharedRedis() (*RedisServer, error) {
	dir, err := os.MkdirTemp("", "testharness-redis-")
	if err != nil {
		return nil, err
	}
	s, err := startRedis(dir, nil)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// SharedPostgres returns the PostgreSQL server shared by all tests of the
// test binary, starting it on first use; Main stops it after the last test.
// Tests should isolate themselves with NewDatabase(t) rather than use its
// DSN directly, and none may Kill, Stop or Restart it: use Postgres(t) for
// that. Requires TestMain to call Main.
func SharedPostgres(t testing.TB) *PostgresServer {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.mainActive {
		t.Fatalf("testharness: SharedPostgres: %v", errNoMain)
	}
	if !shared.pgStarted {
		shared.pgStarted = true
		shared.pg, shared.pgErr = startPostgres()
	}
	if shared.pgErr != nil {
		failStart(t, "shared postgres", shared.pgErr)
	}
	return shared.pg
}
