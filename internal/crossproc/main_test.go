// Package crossproc tests the plugin, the region and the Redis backend
// across real processes: the test binary re-executes itself as children
// (TestChildProcess with an environment variable selecting the role), which
// share one database and one redis-server with the parent. Nothing is
// mocked; the only wrappers are region.Backend wrappers that pause or block
// a child at a chosen point of the protocol.
package crossproc

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/dogpile-go/dogpile"
	redisbackend "github.com/dogpile-go/dogpile/backends/redis"
	"github.com/dogpile-go/dogpile/internal/countpool"
	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

func TestMain(m *testing.M) {
	// go-redis logs every failed dial; the outage test makes thousands.
	goredis.SetLogger(quietLogger{})
	os.Exit(testharness.Main(m))
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// Item is the row every test reads and writes (table "items").
type Item struct {
	ID    uint
	Name  string
	Value int64
}

// eventually bounds every wait of a test, so a bug fails instead of hanging.
const eventually = 60 * time.Second

// Environment of a child process.
const (
	envRole   = "CROSSPROC_ROLE"   // selects the child role; absent: not a child
	envRedis  = "CROSSPROC_REDIS"  // redis-server address
	envSQLite = "CROSSPROC_SQLITE" // SQLite file path
	envPrefix = "CROSSPROC_PREFIX" // backend key prefix, shared by the processes of one test
	envPhase  = "CROSSPROC_PHASE"  // role-specific parameter
	envPG     = "CROSSPROC_PG"     // PostgreSQL DSN, used instead of SQLite when set
)

var prefixSeq atomic.Int64

// uniquePrefix returns a backend prefix no other test uses.
func uniquePrefix(t testing.TB) string {
	name := strings.NewReplacer("{", "_", "}", "_", " ", "_", "/", "_").Replace(t.Name())
	return fmt.Sprintf("%s#%d#%d", name, os.Getpid(), prefixSeq.Add(1))
}

// openSQLite opens the SQLite file at path as dbtest does (WAL, busy
// timeout, immediate write transactions), through a counting pool.
func openSQLite(t testing.TB, path string) (*gorm.DB, *countpool.Pool) {
	t.Helper()
	sqlDB, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_busy_timeout=10000&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sqlDB.Close() })
	pool := &countpool.Pool{DB: sqlDB}
	db, err := gorm.Open(sqlite.New(sqlite.Config{Conn: pool}), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	return db, pool
}

// openPostgres opens the PostgreSQL database at dsn through a counting pool.
func openPostgres(t testing.TB, dsn string) (*gorm.DB, *countpool.Pool) {
	t.Helper()
	sqlDB, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sqlDB.Close() })
	pool := &countpool.Pool{DB: sqlDB}
	db, err := gorm.Open(postgres.New(postgres.Config{Conn: pool}), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	return db, pool
}

// newPostgresDB creates a database on the shared PostgreSQL server with one
// item (ID 1, Value value) and returns its DSN.
func newPostgresDB(t testing.TB, value int64) string {
	t.Helper()
	dsn := testharness.SharedPostgres(t).NewDatabase(t)
	db, _ := openPostgres(t, dsn)
	must(t, db.AutoMigrate(&Item{}))
	must(t, db.Create(&Item{ID: 1, Name: "one", Value: value}).Error)
	return dsn
}

// childDB opens the database the parent named: PostgreSQL when envPG is
// set, else the SQLite file.
func childDB(t *testing.T) (*gorm.DB, *countpool.Pool) {
	if dsn := os.Getenv(envPG); dsn != "" {
		return openPostgres(t, dsn)
	}
	return openSQLite(t, os.Getenv(envSQLite))
}

// newSQLiteFile creates the database file of a test with one item
// (ID 1, Value value) and returns its path.
func newSQLiteFile(t testing.TB, value int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "shared.db")
	db, _ := openSQLite(t, path)
	must(t, db.AutoMigrate(&Item{}))
	must(t, db.Create(&Item{ID: 1, Name: "one", Value: value}).Error)
	return path
}

// directValue reads item 1 straight from the database, bypassing GORM and
// the cache.
func directValue(t testing.TB, db *gorm.DB) int64 {
	t.Helper()
	sqlDB, err := db.DB()
	must(t, err)
	var v int64
	must(t, sqlDB.QueryRow("SELECT value FROM items WHERE id = 1").Scan(&v))
	return v
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
}

// newRedisClient returns a client applying context deadlines to its sockets
// (the setting the backend recommends), closed when t ends.
func newRedisClient(t testing.TB, addr string) *goredis.Client {
	c := goredis.NewClient(&goredis.Options{Addr: addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// newBackend returns a Redis backend with prefix, closed when t ends.
func newBackend(t testing.TB, c goredis.UniversalClient, prefix string, opts ...redisbackend.Option) *redisbackend.Backend {
	all := append([]redisbackend.Option{redisbackend.WithPrefix(prefix), redisbackend.WithTimeout(2 * time.Second)}, opts...)
	b := redisbackend.New(c, all...)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// usePlugin registers the plugin on db with r as the "default" region.
func usePlugin(t testing.TB, db *gorm.DB, r *region.Region) {
	t.Helper()
	must(t, db.Use(dogpile.New(map[string]*region.Region{"default": r})))
}

func fromCacheDefault() func(*gorm.DB) *gorm.DB { return dogpile.FromCache("default") }

type errValue int64

func (e errValue) Error() string { return fmt.Sprintf("read value %d", int64(e)) }

// cachedValue reads item 1 through FromCache.
func cachedValue(db *gorm.DB) (int64, error) {
	var it Item
	err := db.Scopes(dogpile.FromCache("default")).First(&it, 1).Error
	return it.Value, err
}

// ---- child processes ----

// child is a running copy of the test binary in a child role. Lines it
// writes to stdout starting with "@@" are protocol messages; everything else
// (and stderr) is kept for the failure message.
type child struct {
	t      testing.TB
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	msgs   chan string   // protocol lines, without "@@"
	exited chan struct{} // closed once the process was waited for

	mu      sync.Mutex
	output  bytes.Buffer // guarded by mu: non-protocol stdout and stderr
	waitErr error        // guarded by mu; valid once exited is closed
}

// startChild starts the test binary as a child in role, with env added to
// its environment. It is SIGKILLed when the test ends, or when the parent
// dies (Pdeathsig).
func startChild(t testing.TB, name, role string, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildProcess$", "-test.count=1", "-test.timeout=3m")
	cmd.Env = append(os.Environ(), envRole+"="+role)
	cmd.Env = append(cmd.Env, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c := &child{t: t, name: name, cmd: cmd, msgs: make(chan string, 1024), exited: make(chan struct{})}
	stdin, err := cmd.StdinPipe()
	must(t, err)
	stdout, err := cmd.StdoutPipe()
	must(t, err)
	cmd.Stderr = (*childWriter)(c)
	c.stdin = stdin
	must(t, cmd.Start())
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if m, ok := strings.CutPrefix(line, "@@"); ok {
				c.msgs <- m
				continue
			}
			c.mu.Lock()
			c.output.WriteString(line + "\n")
			c.mu.Unlock()
		}
	}()
	go func() {
		<-scanned // Wait closes the pipe: read it all first
		err := cmd.Wait()
		c.mu.Lock()
		c.waitErr = err
		c.mu.Unlock()
		close(c.exited)
		close(c.msgs)
	}()
	t.Cleanup(func() {
		c.kill()
		if t.Failed() {
			t.Logf("child %s output:\n%s", c.name, c.out())
		}
	})
	return c
}

type childWriter child

func (w *childWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.output.Write(p)
}

func (c *child) out() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.output.String()
}

// send writes one line to the child's stdin.
func (c *child) send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		c.t.Fatalf("child %s: write stdin: %v\n%s", c.name, err, c.out())
	}
}

// next returns the child's next protocol message, failing the test if none
// comes within eventually.
func (c *child) next() string {
	c.t.Helper()
	select {
	case m, ok := <-c.msgs:
		if !ok {
			c.t.Fatalf("child %s exited (%v) before the next message; output:\n%s", c.name, c.err(), c.out())
		}
		if e, isErr := strings.CutPrefix(m, "error "); isErr {
			c.t.Fatalf("child %s reported an error: %s", c.name, e)
		}
		return m
	case <-time.After(eventually):
		c.t.Fatalf("child %s: no message within %v; output:\n%s", c.name, eventually, c.out())
	}
	return ""
}

// expect reads the next message and checks that it starts with word,
// returning the rest.
func (c *child) expect(word string) string {
	c.t.Helper()
	m := c.next()
	rest, ok := strings.CutPrefix(m, word)
	if !ok {
		c.t.Fatalf("child %s: got message %q, want %q…", c.name, m, word)
	}
	return strings.TrimSpace(rest)
}

func (c *child) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.waitErr
}

// wait waits for the child to exit and fails the test if it did not exit
// cleanly.
func (c *child) wait() {
	c.t.Helper()
	select {
	case <-c.exited:
	case <-time.After(eventually):
		c.t.Fatalf("child %s did not exit within %v; output:\n%s", c.name, eventually, c.out())
	}
	if err := c.err(); err != nil {
		c.t.Fatalf("child %s failed: %v; output:\n%s", c.name, err, c.out())
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *child) kill() {
	select {
	case <-c.exited:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-c.exited:
	case <-time.After(eventually):
		c.t.Errorf("child %s survived SIGKILL", c.name)
	}
}

// ---- the child side ----

// TestChildProcess is the entry point of the child processes; it returns at
// once in a normal test run.
func TestChildProcess(t *testing.T) {
	role := os.Getenv(envRole)
	if role == "" {
		return
	}
	fn := childRoles[role]
	if fn == nil {
		say("error unknown role %q", role)
		t.Fatalf("unknown role %q", role)
	}
	fn(t)
}

// childRoles maps a role to its body; filled by the test files' init.
var childRoles = map[string]func(t *testing.T){}

var sayMu sync.Mutex

// say writes one protocol message to stdout.
func say(format string, args ...any) {
	sayMu.Lock()
	defer sayMu.Unlock()
	fmt.Fprintf(os.Stdout, "@@"+format+"\n", args...)
}

// stdinLines delivers the lines the parent writes to the child's stdin.
var stdinLines = sync.OnceValue(func() <-chan string {
	ch := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			ch <- sc.Text()
		}
		close(ch)
	}()
	return ch
})

// awaitLine waits for the parent to write want on stdin.
func awaitLine(t *testing.T, want string) {
	t.Helper()
	select {
	case l, ok := <-stdinLines():
		if !ok || l != want {
			say("error stdin: got %q (open %v), want %q", l, ok, want)
			t.Fatalf("stdin: got %q, want %q", l, want)
		}
	case <-time.After(eventually):
		say("error no %q on stdin", want)
		t.Fatalf("no %q on stdin", want)
	}
}

// childFail reports err to the parent and fails the child.
func childFail(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	say("error %s", msg)
	t.Fatal(msg)
}

func childMust(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		childFail(t, "%v", err)
	}
}

// childRedis returns a client for the redis-server the parent named.
func childRedis(t *testing.T) *goredis.Client {
	return newRedisClient(t, os.Getenv(envRedis))
}

// waitKey polls until the Redis key exists, or eventually passes.
func waitKey(ctx context.Context, c *goredis.Client, key string) error {
	deadline := time.Now().Add(eventually)
	for {
		n, err := c.Exists(ctx, key).Result()
		if err == nil && n == 1 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("key %q did not appear within %v (last error %v)", key, eventually, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
