package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dogpile-go/dogpile"
	redisbackend "github.com/dogpile-go/dogpile/backends/redis"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

func TestMain(m *testing.M) {
	goredis.SetLogger(quiet{}) // as main does
	os.Exit(testharness.Main(m))
}

// cli runs the command line and returns its status and output.
func cli(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// mustCLI runs the command line and fails the test unless it succeeds.
func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := cli(args...)
	if code != 0 {
		t.Fatalf("dogpile %q: exit %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
	}
	if errOut != "" {
		t.Fatalf("dogpile %q wrote to stderr: %s", args, errOut)
	}
	return out
}

type User struct {
	ID   uint
	Name string
	Age  int
}

// field returns the value of the line "name  value" of a command's output.
func field(t *testing.T, out, name string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 1 && f[0] == name {
			return strings.TrimSpace(strings.TrimPrefix(l, name))
		}
	}
	t.Fatalf("no %q line in:\n%s", name, out)
	return ""
}

// TestCLI fills a region through the GORM plugin over SQLite and a Redis
// region, then runs every command against that Redis.
func TestCLI(t *testing.T) {
	ctx := context.Background()
	srv := testharness.SharedRedis(t)
	const prefix = "cliapp"
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = client.Close() })
	b := redisbackend.New(client, redisbackend.WithPrefix(prefix), redisbackend.WithTimeout(2*time.Second))
	t.Cleanup(func() { _ = b.Close() })
	r := region.New(b, region.WithExpiration(time.Hour))
	t.Cleanup(func() { _ = r.Close() })
	// Another region on the same Redis and prefix: never listed.
	other := region.New(b, region.WithName("other"))
	t.Cleanup(func() { _ = other.Close() })
	dbtest.Must(t, other.Set(ctx, "x", 1))

	db := dbtest.SQLite(t)
	dbtest.Must(t, db.Use(dogpile.New(map[string]*region.Region{"default": r})))
	dbtest.Must(t, db.AutoMigrate(&User{}))
	dbtest.Must(t, db.Create(&[]User{{Name: "Ada", Age: 36}, {Name: "Bob", Age: 17}}).Error)
	adults := func() []User {
		var us []User
		dbtest.Must(t, db.Scopes(dogpile.FromCache("default")).Where("age > ?", 18).Find(&us).Error)
		if len(us) != 1 || us[0].Name != "Ada" {
			t.Fatalf("adults: %+v", us)
		}
		return us
	}
	first := func() {
		var u User
		dbtest.Must(t, db.Scopes(dogpile.FromCache("default")).First(&u, 2).Error)
		if u.Name != "Bob" {
			t.Fatalf("first: %+v", u)
		}
	}
	queries := func(what string, want int64, f func()) {
		t.Helper()
		db.Pool.Reset()
		f()
		if got := db.Pool.Queries(); got != want {
			t.Fatalf("%s: %d queries; want %d", what, got, want)
		}
	}
	queries("filling", 2, func() { adults(); first() })
	queries("hits", 0, func() { adults(); first() })

	url := "redis://" + srv.Addr + "/0"
	g := []string{"--redis", url, "--prefix", prefix}

	// stats: the two answers, their bytes, the tag counters (users and *,
	// bumped by the Create and read by the queries).
	out := mustCLI(t, append(g, "stats")...)
	var want int64
	for e, err := range r.Entries(ctx) {
		dbtest.Must(t, err)
		want += int64(e.Size)
	}
	tagKeys, err := client.Keys(ctx, prefix+":default:t:*").Result() // the test may use KEYS
	dbtest.Must(t, err)
	for name, v := range map[string]string{"region": "default", "entries": "2", "bytes": fmt.Sprint(want), "fresh": "2", "stale": "0", "expired": "0", "tags": "2"} {
		if got := field(t, out, name); got != v {
			t.Errorf("stats %s = %q; want %q\n%s", name, got, v, out)
		}
	}
	if len(tagKeys) != 2 {
		t.Errorf("Redis holds %d tag counters: %q", len(tagKeys), tagKeys)
	}

	// keys: exactly the entry keys Redis holds for the region.
	stored, err := client.Keys(ctx, prefix+":default:k:*").Result()
	dbtest.Must(t, err)
	for i, k := range stored {
		stored[i] = strings.TrimPrefix(k, prefix+":default:k:")
	}
	slices.Sort(stored)
	listed := strings.Fields(mustCLI(t, append(g, "keys")...))
	slices.Sort(listed)
	if len(stored) != 2 || !slices.Equal(listed, stored) {
		t.Fatalf("keys listed %q; Redis holds %q", listed, stored)
	}
	if got := strings.Fields(mustCLI(t, append(g, "keys", "--limit", "1")...)); len(got) != 1 {
		t.Errorf("keys --limit 1: %q", got)
	}
	if got := mustCLI(t, append(g, "keys", "--match", "no-such-*")...); got != "" {
		t.Errorf("keys --match no-such-*: %q", got)
	}
	if got := strings.Fields(mustCLI(t, append(g, "keys", "--match", listed[0])...)); !slices.Equal(got, listed[:1]) {
		t.Errorf("keys --match %q: %q", listed[0], got)
	}
	long := mustCLI(t, append(g, "keys", "--long")...)
	if n := strings.Count(long, "\tfresh\t"); n != 2 || strings.Count(long, "\tusers\n") != 2 {
		t.Errorf("keys --long:\n%s", long)
	}

	// get: the metadata and the payload of the answer holding Ada.
	var adaKey string
	for _, k := range listed {
		out := mustCLI(t, append(g, "get", k)...)
		if field(t, out, "key") != k || field(t, out, "state") != "fresh" || field(t, out, "tags") != "users" ||
			field(t, out, "redis") != prefix+":default:k:"+k || field(t, out, "expires") == "never" {
			t.Errorf("get %s:\n%s", k, out)
		}
		if !strings.Contains(field(t, out, "payload"), "cached query answer as JSON") {
			t.Errorf("get %s: payload not decoded:\n%s", k, out)
		}
		if strings.Contains(out, `"Ada"`) {
			adaKey = k
		}
	}
	if adaKey == "" {
		t.Fatal("no entry shows Ada")
	}
	if code, _, errOut := cli(append(g, "get", "no-such-key")...); code != 1 || !strings.Contains(errOut, `no entry "no-such-key"`) {
		t.Errorf("get of a missing key: exit %d, %q", code, errOut)
	}

	// invalidate-table users: both answers read users, both are misses.
	out = mustCLI(t, append(g, "invalidate-table", "users")...)
	if !strings.Contains(out, "tags users users#rows *") {
		t.Errorf("invalidate-table: %q", out)
	}
	if got := field(t, mustCLI(t, append(g, "stats")...), "expired"); got != "2" {
		t.Errorf("after invalidate-table, %s expired; want 2", got)
	}
	queries("after invalidate-table users", 2, func() { adults(); first() })
	queries("hits again", 0, func() { adults(); first() })
	// Another table's invalidation leaves them alone.
	mustCLI(t, append(g, "invalidate-table", "orders")...)
	queries("after invalidate-table orders", 0, func() { adults(); first() })

	// invalidate-region --soft: stale, served while one refreshes.
	mustCLI(t, append(g, "invalidate-region", "--soft")...)
	if s := mustCLI(t, append(g, "stats")...); field(t, s, "stale") != "2" || field(t, s, "expired") != "0" {
		t.Errorf("after a soft invalidation:\n%s", s)
	}
	// invalidate-region: misses.
	out = mustCLI(t, append(g, "invalidate-region")...)
	if out != "invalidated region default (hard)\n" {
		t.Errorf("invalidate-region: %q", out)
	}
	queries("after invalidate-region", 2, func() { adults(); first() })
	queries("hits after invalidate-region", 0, func() { adults(); first() })

	// The other region was never listed, nor touched.
	if got := strings.Fields(mustCLI(t, "--redis", url, "--prefix", prefix, "--region", "other", "keys")); !slices.Equal(got, []string{"x"}) {
		t.Errorf("keys of region other: %q", got)
	}
	// The environment gives the URL.
	t.Setenv("DOGPILE_REDIS_URL", url)
	if got := field(t, mustCLI(t, "--prefix", prefix, "stats"), "entries"); got != "2" {
		t.Errorf("stats through DOGPILE_REDIS_URL: %s entries", got)
	}
}

// TestCLICluster lists and counts a region kept on a Redis Cluster.
func TestCLICluster(t *testing.T) {
	ctx := context.Background()
	cl := testharness.RedisCluster(t, 3)
	client := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: cl.Addrs})
	t.Cleanup(func() { _ = client.Close() })
	b := redisbackend.New(client, redisbackend.WithTimeout(2*time.Second))
	t.Cleanup(func() { _ = b.Close() })
	r := region.New(b, region.WithName("c"))
	t.Cleanup(func() { _ = r.Close() })
	var want []string
	for i := range 20 {
		k := fmt.Sprintf("k%02d", i)
		want = append(want, k)
		dbtest.Must(t, r.Set(ctx, k, i, region.WithTags("accounts")))
	}
	g := []string{"--cluster", strings.Join(cl.Addrs, ","), "--region", "c"}
	got := strings.Fields(mustCLI(t, append(g, "keys")...))
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("keys over the cluster: %q", got)
	}
	out := mustCLI(t, append(g, "stats")...)
	if field(t, out, "entries") != "20" || field(t, out, "tags") != "1" {
		t.Fatalf("stats over the cluster:\n%s", out)
	}
	mustCLI(t, append(g, "invalidate-table", "users")...) // another table: nothing changes
	if field(t, mustCLI(t, append(g, "stats")...), "expired") != "0" {
		t.Fatal("invalidate-table users invalidated entries of accounts")
	}
	mustCLI(t, append(g, "invalidate-table", "accounts")...)
	if field(t, mustCLI(t, append(g, "stats")...), "expired") != "20" {
		t.Fatal("invalidate-table accounts over the cluster")
	}
	dbtest.Must(t, r.Set(ctx, "k00", 0, region.WithTags("accounts")))
	if s := mustCLI(t, append(g, "stats")...); field(t, s, "expired") != "19" || field(t, s, "fresh") != "1" {
		t.Fatalf("after one refill:\n%s", s)
	}
	mustCLI(t, append(g, "invalidate-region")...)
	if field(t, mustCLI(t, append(g, "stats")...), "expired") != "20" {
		t.Fatal("invalidate-region over the cluster")
	}
}

// Every command, and the tool itself, prints its usage for -h and --help
// and exits 0, without needing Redis.
func TestCLIHelp(t *testing.T) {
	t.Setenv("DOGPILE_REDIS_URL", "")
	for _, flag := range []string{"-h", "--help"} {
		code, out, errOut := cli(flag)
		if code != 0 || errOut != "" || !strings.HasPrefix(out, "Usage: dogpile [global flags] <command> [flags]") || !strings.Contains(out, "-prefix") {
			t.Errorf("dogpile %s: exit %d, stderr %q, stdout:\n%s", flag, code, errOut, out)
		}
		for name, c := range commands {
			code, out, errOut := cli(name, flag)
			if code != 0 || errOut != "" || !strings.HasPrefix(out, "Usage: dogpile [global flags] "+c.usage+"\n") {
				t.Errorf("dogpile %s %s: exit %d, stderr %q, stdout:\n%s", name, flag, code, errOut, out)
			}
		}
	}
	if len(commands) != 5 {
		t.Errorf("%d commands", len(commands))
	}
	if code, out, _ := cli("keys", "-h"); code != 0 || !strings.Contains(out, "-match GLOB") || !strings.Contains(out, "-limit N") {
		t.Errorf("keys -h:\n%s", out)
	}
	if code, out, _ := cli("invalidate-region", "--help"); code != 0 || !strings.Contains(out, "-soft") {
		t.Errorf("invalidate-region --help:\n%s", out)
	}
}

// Usage errors exit 2 with a message and the usage on stderr.
func TestCLIUsageErrors(t *testing.T) {
	t.Setenv("DOGPILE_REDIS_URL", "")
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{nil, "dogpile: no command"},
		{[]string{"frobnicate"}, `dogpile: unknown command "frobnicate"`},
		{[]string{"--bogus", "stats"}, "dogpile: flag provided but not defined: -bogus"},
		{[]string{"keys", "--limit", "x"}, `dogpile keys: invalid value "x" for flag -limit`},
		{[]string{"get"}, "dogpile get: want one key, got 0 arguments"},
		{[]string{"get", "a", "b"}, "dogpile get: want one key, got 2 arguments"},
		{[]string{"invalidate-table"}, "dogpile invalidate-table: want at least one table"},
		{[]string{"stats", "extra"}, `dogpile stats: unexpected arguments ["extra"]`},
		{[]string{"stats"}, "dogpile: no Redis: give --redis URL, --cluster ADDRS or set DOGPILE_REDIS_URL"},
		{[]string{"--redis", "redis://x", "--cluster", "y:1", "stats"}, "dogpile: give --redis or --cluster, not both"},
		{[]string{"--redis", "http://x", "stats"}, `dogpile: --redis "http://x": `},
	} {
		code, out, errOut := cli(tc.args...)
		if code != 2 || out != "" || !strings.HasPrefix(errOut, tc.msg) || !strings.Contains(errOut, "Usage: dogpile") {
			t.Errorf("dogpile %q: exit %d, stdout %q, stderr:\n%s", tc.args, code, out, errOut)
		}
	}
}

// An unreachable Redis gives one line saying where, and exit 1, at once:
// the connection is refused and nothing retries.
func TestCLIUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close() // nothing listens there now
	for _, g := range [][]string{{"--redis", "redis://" + addr}, {"--cluster", addr}} {
		for _, cmd := range []string{"stats", "keys", "get", "invalidate-table", "invalidate-region"} {
			args := append(append([]string(nil), g...), cmd)
			switch cmd {
			case "get", "invalidate-table":
				args = append(args, "users")
			}
			code, out, errOut := cli(args...)
			want := "dogpile: cannot reach Redis at " + addr + ": dial tcp " + addr + ": connect: connection refused\n"
			if code != 1 || out != "" || errOut != want {
				t.Errorf("dogpile %q: exit %d, stdout %q, stderr %q; want %q", args, code, out, errOut, want)
			}
		}
	}
}

// A harness Redis that answers, then is killed: every command that worked
// says in one line that Redis cannot be reached, and exits 1.
func TestCLIRedisKilled(t *testing.T) {
	srv := testharness.Redis(t)
	url := "redis://" + srv.Addr
	if code, _, errOut := cli("--redis", url, "--prefix", "killed", "stats"); code != 0 {
		t.Fatalf("stats with Redis up: exit %d, %s", code, errOut)
	}
	srv.Kill()
	for _, cmd := range [][]string{{"stats"}, {"keys"}, {"get", "k"}, {"invalidate-table", "users"}, {"invalidate-region"}} {
		args := append([]string{"--redis", url, "--prefix", "killed", "--timeout", "2s"}, cmd...)
		code, out, errOut := cli(args...)
		want := "dogpile: cannot reach Redis at " + srv.Addr + ": "
		if code != 1 || out != "" || !strings.HasPrefix(errOut, want) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("dogpile %q with Redis killed: exit %d, stdout %q, stderr %q; want one line starting %q", args, code, out, errOut, want)
		}
	}
}
