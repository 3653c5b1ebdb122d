package testharness_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"github.com/redis/go-redis/v9"

	"github.com/dogpile-go/dogpile/internal/testharness"
)

func TestMain(m *testing.M) { os.Exit(testharness.Main(m)) }

func TestFreePort(t *testing.T) {
	port := testharness.FreePort(t)
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("listen on free port %d: %v", port, err)
	}
	l.Close()
}

func TestRedisSetGet(t *testing.T) {
	t.Parallel()
	srv := testharness.Redis(t)
	setGet(t, srv.Addr, "key", "value")
}

func TestRedisKillRestart(t *testing.T) {
	t.Parallel()
	srv := testharness.Redis(t)
	ctx := context.Background()
	client := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	defer client.Close()
	if err := client.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	pid := serverPID(t, client)

	srv.Kill()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("redis-server pid %d still exists after Kill (signal 0: %v)", pid, err)
	}
	if err := client.Ping(ctx).Err(); err == nil {
		t.Fatal("PING succeeded after Kill")
	}

	addr := srv.Addr
	srv.Restart(t)
	if srv.Addr != addr {
		t.Fatalf("Restart moved the server from %s to %s", addr, srv.Addr)
	}
	if err := client.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Restart: %v", err)
	}
	if err := client.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GET k after Kill+Restart: got err %v, want redis.Nil (data gone)", err)
	}
	if newPID := serverPID(t, client); newPID == pid {
		t.Fatalf("same pid %d after Restart", pid)
	}
	setGet(t, srv.Addr, "k2", "v2")

	srv.Stop()
	if err := client.Ping(ctx).Err(); err == nil {
		t.Fatal("PING succeeded after Stop")
	}
}

func TestRedisCluster(t *testing.T) {
	t.Parallel()
	cluster := testharness.RedisCluster(t, 3)
	if len(cluster.Addrs) != 3 {
		t.Fatalf("got %d addresses, want 3", len(cluster.Addrs))
	}
	ctx := context.Background()
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs})
	defer client.Close()

	// 100 keys spread over the slots, hence over every node.
	for i := range 100 {
		key := fmt.Sprintf("key-%d", i)
		if err := client.Set(ctx, key, i, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", key, err)
		}
	}
	for i := range 100 {
		key := fmt.Sprintf("key-%d", i)
		got, err := client.Get(ctx, key).Int()
		if err != nil || got != i {
			t.Fatalf("GET %s = %d, %v; want %d", key, got, err, i)
		}
	}
	for _, addr := range cluster.Addrs {
		node := redis.NewClient(&redis.Options{Addr: addr})
		n, err := node.DBSize(ctx).Result()
		node.Close()
		if err != nil {
			t.Fatalf("DBSIZE on %s: %v", addr, err)
		}
		if n == 0 {
			t.Errorf("node %s holds no key: slots are not spread", addr)
		}
	}
}

func TestSharedRedis(t *testing.T) {
	t.Parallel()
	a := testharness.SharedRedis(t)
	b := testharness.SharedRedis(t)
	if a != b {
		t.Fatal("SharedRedis returned two servers")
	}
	setGet(t, a.Addr, t.Name()+":key", "value")
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	srv := testharness.Postgres(t)
	useDatabase(t, srv.DSN)
	// A second database on the same server is independent.
	useDatabase(t, srv.NewDatabase(t))

	srv.Kill()
	db := openDB(t, srv.DSN)
	if err := db.Ping(); err == nil {
		t.Fatal("ping succeeded after Kill")
	}
	db.Close()
	srv.Restart(t)
	db = openDB(t, srv.DSN)
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT count(*) FROM items").Scan(&n); err != nil {
		t.Fatalf("count after Restart: %v", err)
	}
	if n != 1 {
		t.Fatalf("got %d rows after Restart, want 1", n)
	}
}

func TestSharedPostgres(t *testing.T) {
	t.Parallel()
	srv := testharness.SharedPostgres(t)
	if testharness.SharedPostgres(t) != srv {
		t.Fatal("SharedPostgres returned two servers")
	}
	for i := range 2 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			useDatabase(t, testharness.SharedPostgres(t).NewDatabase(t))
		})
	}
}

// setGet writes and reads back a key.
func setGet(t *testing.T, addr, key, value string) {
	t.Helper()
	ctx := context.Background()
	client := redis.NewClient(&redis.Options{Addr: addr})
	defer client.Close()
	if err := client.Set(ctx, key, value, 0).Err(); err != nil {
		t.Fatalf("SET %s: %v", key, err)
	}
	got, err := client.Get(ctx, key).Result()
	if err != nil || got != value {
		t.Fatalf("GET %s = %q, %v; want %q", key, got, err, value)
	}
}

// serverPID returns the process id reported by INFO server.
func serverPID(t *testing.T, client *redis.Client) int {
	t.Helper()
	info, err := client.InfoMap(context.Background(), "server").Result()
	if err != nil {
		t.Fatalf("INFO server: %v", err)
	}
	pid, err := strconv.Atoi(info["Server"]["process_id"])
	if err != nil {
		t.Fatalf("process_id in INFO server: %v", err)
	}
	return pid
}

// openDB opens dsn with the pgx database/sql driver.
func openDB(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	return db
}

// useDatabase creates a table in an empty database, inserts a row and reads
// it back.
func useDatabase(t *testing.T, dsn string) {
	t.Helper()
	db := openDB(t, dsn)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)"); err != nil {
		t.Fatalf("create table in %s: %v", dsn, err)
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO items (id, name) VALUES ($1, $2)", 1, "one"); err != nil {
		t.Fatalf("insert: %v", err)
	}
	var name string
	if err := db.QueryRowContext(ctx, "SELECT name FROM items WHERE id = $1", 1).Scan(&name); err != nil {
		t.Fatalf("select: %v", err)
	}
	if name != "one" {
		t.Fatalf("got name %q, want %q", name, "one")
	}
}
