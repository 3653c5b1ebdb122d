package testharness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sys/unix"
)

// postgresPackage is the Debian package that provides initdb and postgres.
const postgresPackage = "postgresql"

// DurableEnv, set to "1", makes the servers the harness starts keep
// PostgreSQL's durable defaults (fsync, synchronous_commit and
// full_page_writes on), so that a benchmark of writes measures commits as
// a production server makes them.
const DurableEnv = "DOGPILE_PG_DURABLE"

// durability returns the server settings that trade durability for speed,
// or none under DurableEnv.
func durability() []string {
	if os.Getenv(DurableEnv) == "1" {
		return nil
	}
	return []string{"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"}
}

// postgresUser is the database superuser of every server, and the system
// user the server runs as when the tests run as root.
const postgresUser = "postgres"

// PostgresServer is a PostgreSQL server listening on 127.0.0.1, tuned for
// tests rather than durability (fsync, synchronous_commit and
// full_page_writes are off) unless DurableEnv is "1", as benchmarks of
// writes set it. Authentication is "trust": no password.
type PostgresServer struct {
	// DSN connects to the database "test" as user postgres, in the
	// keyword/value form understood by pgx and gorm.io/driver/postgres:
	// "host=127.0.0.1 port=N user=postgres dbname=test sslmode=disable".
	DSN string
	// Port is the TCP port on 127.0.0.1.
	Port int
	// Dir is the server folder: the data directory "data", the Unix
	// socket and the log "postgres.log".
	Dir string

	proc  *process
	dbSeq atomic.Int64
}

// Postgres starts a PostgreSQL server on a free port of 127.0.0.1 in a new
// folder, waits until it accepts connections and creates the database
// "test" (see DSN). The server is stopped and its folder removed when the
// test ends.
//
// Starting PostgreSQL takes about a second (initdb); tests that only need
// a database should prefer SharedPostgres(t).NewDatabase(t).
func Postgres(t testing.TB) *PostgresServer {
	t.Helper()
	s, err := startPostgres()
	if err != nil {
		failStart(t, "postgres", err)
	}
	t.Cleanup(s.destroy)
	return s
}

// Kill sends SIGKILL to the server and all its backends (its process
// group) and waits for the server to exit. Kill on a stopped server does
// nothing.
func (s *PostgresServer) Kill() {
	s.proc.kill()
}

// Stop shuts the server down with a fast shutdown (SIGINT: open sessions
// are ended), and kills it if it has not exited after a few seconds. Stop on
// a stopped server does nothing.
func (s *PostgresServer) Stop() {
	s.proc.stop()
}

// Restart starts the server again on the same port with the same data
// directory (running crash recovery after Kill) and waits until it accepts
// connections. A running server is stopped first. Databases and committed
// data survive.
func (s *PostgresServer) Restart(t testing.TB) {
	t.Helper()
	s.proc.stop()
	if err := s.start(); err != nil {
		t.Fatalf("testharness: restart postgres on port %d: %v", s.Port, err)
	}
}

// NewDatabase creates a new, empty database with a unique name and returns
// its DSN (same form as DSN). The database is dropped, best effort, when the
// test ends. Use it to isolate tests that share a server.
func (s *PostgresServer) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("%s_%d", dbNamePrefix(t.Name()), s.dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := s.exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("testharness: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if !s.proc.running() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		// WITH (FORCE) (PostgreSQL 13+) ends sessions a test left open.
		if err := s.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Logf("testharness: drop database %s: %v", name, err)
		}
	})
	return s.dsn(name)
}

// dbNamePrefix turns a test name into the start of a database name: lower
// case letters, digits and underscores, short enough to stay under
// PostgreSQL's 63-byte limit with a suffix.
func dbNamePrefix(testName string) string {
	name := strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(testName, "_"))
	name = strings.Trim(name, "_")
	if len(name) > 40 {
		name = name[:40]
	}
	return "t_" + name
}

// dsn returns the DSN of database dbname.
func (s *PostgresServer) dsn(dbname string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=%s sslmode=disable", s.Port, postgresUser, dbname)
}

// exec runs one statement in the "postgres" database.
func (s *PostgresServer) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, s.dsn("postgres"))
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

// start starts the process and waits until it accepts connections.
func (s *PostgresServer) start() error {
	if err := s.proc.start(); err != nil {
		return err
	}
	return s.proc.waitReady(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, s.dsn("postgres"))
		if err != nil {
			return err
		}
		return conn.Close(ctx)
	})
}

// destroy stops the server and removes its folder.
func (s *PostgresServer) destroy() {
	s.proc.stop()
	removeSysVSegment(filepath.Join(s.Dir, "data"))
	_ = os.RemoveAll(s.Dir)
}

// startPostgres creates a folder, runs initdb in it and starts postgres on
// a free port (another one if that port turns out to be taken), then
// creates the database "test".
func startPostgres() (_ *PostgresServer, err error) {
	binDir, err := postgresBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := postgresCredential()
	if err != nil {
		return nil, err
	}
	dir, err := postgresFolder(cred)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(dir)
		}
	}()
	dataDir := filepath.Join(dir, "data")
	logPath := filepath.Join(dir, "postgres.log")
	if err := initdb(binDir, dir, dataDir, logPath, cred); err != nil {
		return nil, err
	}
	var s *PostgresServer
	for range portAttempts {
		port, portErr := freePort()
		if portErr != nil {
			return nil, portErr
		}
		s = &PostgresServer{
			Port: port,
			Dir:  dir,
			proc: &process{
				name: "postgres",
				path: filepath.Join(binDir, "postgres"),
				args: append([]string{
					"-D", dataDir,
					"-p", strconv.Itoa(port),
					"-k", dir,
					"-c", "listen_addresses=127.0.0.1",
				}, durability()...),
				dir:     dir,
				logPath: logPath,
				cred:    cred,
				stopSig: syscall.SIGINT, // fast shutdown
			},
		}
		s.DSN = s.dsn("test")
		err = s.start()
		if err == nil {
			break
		}
		s.proc.kill()
		if !s.proc.portInUse() {
			removeSysVSegment(dataDir)
			return nil, err
		}
	}
	if err != nil {
		removeSysVSegment(dataDir)
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := s.exec(ctx, "CREATE DATABASE test"); err != nil {
		s.destroy()
		return nil, fmt.Errorf("create database test: %w", err)
	}
	return s, nil
}

// initdb creates the data directory, with superuser "postgres" and trust
// authentication. Its output goes to the server log.
func initdb(binDir, dir, dataDir, logPath string, cred *syscall.Credential) error {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open initdb log: %w", err)
	}
	defer logFile.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*startTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "initdb"),
		"-D", dataDir,
		"-U", postgresUser,
		"--auth=trust",
		"--encoding=UTF8",
		"--locale=C",
		"--no-sync",
	)
	cmd.Dir = dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: cred}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("initdb: %w\n--- last lines of %s ---\n%s", err, logPath, tailFile(logPath, 30))
	}
	return nil
}

// postgresBinDir finds the folder holding initdb and postgres: the newest
// /usr/lib/postgresql/<version>/bin (Debian's layout), else PATH.
func postgresBinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(dir string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
		return v
	}
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if isExecutable(filepath.Join(d, "initdb")) && isExecutable(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	if _, err := lookBinary("initdb", postgresPackage); err != nil {
		return "", err
	}
	pg, err := lookBinary("postgres", postgresPackage)
	if err != nil {
		return "", err
	}
	// Follow a symlink such as /usr/local/bin/postgres to the real
	// folder, where initdb lives too.
	if real, err := filepath.EvalSymlinks(pg); err == nil {
		pg = real
	}
	dir := filepath.Dir(pg)
	if !isExecutable(filepath.Join(dir, "initdb")) {
		return "", &errMissing{binary: "initdb next to " + pg, pkg: postgresPackage}
	}
	return dir, nil
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// postgresCredential returns nil when the tests do not run as root, and
// otherwise the credentials of the postgres system user, as PostgreSQL
// refuses to run as root.
func postgresCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(postgresUser)
	if err != nil {
		return nil, &errMissing{binary: "system user " + postgresUser + " (needed to run PostgreSQL as root)", pkg: postgresPackage}
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("uid of %s: %w", postgresUser, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("gid of %s: %w", postgresUser, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// postgresFolder creates the server folder under os.TempDir() (not
// t.TempDir(), whose parents are private to the current user). With cred,
// the folder belongs to that user, and os.TempDir() must be traversable by
// it.
func postgresFolder(cred *syscall.Credential) (string, error) {
	base := os.TempDir()
	if cred != nil {
		fi, err := os.Stat(base)
		if err != nil {
			return "", fmt.Errorf("temporary folder: %w", err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return "", fmt.Errorf("temporary folder %s (mode %v) is not traversable by user %s: set TMPDIR to a folder such as /tmp", base, fi.Mode().Perm(), postgresUser)
		}
	}
	dir, err := os.MkdirTemp(base, "testharness-postgres-")
	if err != nil {
		return "", fmt.Errorf("create postgres folder: %w", err)
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			_ = os.RemoveAll(dir)
			return "", fmt.Errorf("give %s to user %s: %w", dir, postgresUser, err)
		}
	}
	return dir, nil
}

// removeSysVSegment removes the small System V shared memory segment of a
// server that was killed (a clean shutdown removes it and postmaster.pid).
// Its key and id are on line 7 of postmaster.pid. The segment is only
// removed when its key matches and no process is attached.
func removeSysVSegment(dataDir string) {
	data, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return
	}
	lines := strings.Split(string(data), "\n")
	if len(lines) < 7 {
		return
	}
	fields := strings.Fields(lines[6])
	if len(fields) != 2 {
		return
	}
	key, err1 := strconv.ParseInt(fields[0], 10, 64)
	id, err2 := strconv.Atoi(fields[1])
	if err := errors.Join(err1, err2); err != nil || key == 0 {
		return
	}
	var ds unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &ds); err != nil {
		return
	}
	if int64(ds.Perm.Key) != key || ds.Nattch != 0 {
		return
	}
	_, _ = unix.SysvShmCtl(id, unix.IPC_RMID, nil)
}

// psqlPath is the psql binary next to the server's initdb and postgres.
var psqlPath = sync.OnceValues(func() (string, error) {
	binDir, err := postgresBinDir()
	if err != nil {
		return "", err
	}
	path := filepath.Join(binDir, "psql")
	if !isExecutable(path) {
		return "", &errMissing{binary: "psql in " + binDir, pkg: "postgresql-client"}
	}
	return path, nil
})

// Psql runs sql with the real psql client (the one installed with the
// server) against the database of dsn (a DSN of s, as DSN and NewDatabase
// return it), as an application other than the tests would: its own
// process and connection, autocommit, no psqlrc, stopping at the first
// error. It returns what psql printed (unaligned, tuples only), and an
// error holding that output when psql fails.
func (s *PostgresServer) Psql(ctx context.Context, dsn, sql string) (string, error) {
	path, err := psqlPath()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, path, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", sql)
	cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=10")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("psql %q on port %d: %w: %s", sql, s.Port, err, out)
	}
	return string(out), nil
}
