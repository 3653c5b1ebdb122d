package dogpile_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	redisbackend "github.com/dogpile-go/dogpile/backends/redis"
	"github.com/dogpile-go/dogpile/internal/countpool"
	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

// What a write costs with the plugin (issue 12), on PostgreSQL, side by side
// in one run: each case without the plugin, with a memory region and with a
// Redis region, each on a fresh database of the same server with the same
// model and data. Besides ns/op, every sub-benchmark reports the statements
// that reached PostgreSQL (queries/op), and the Redis ones the commands and
// round trips the region sent per commit (redis-cmds/op, redis-rtts/op).
// scripts/bench-write.sh runs it several times and prints the medians and
// the ratios against the targets:
//
//	go test -run '^$' -bench Writes -benchmem .
//
// The servers come from the test harness (SharedPostgres, SharedRedis).
// The harness starts PostgreSQL with fsync, synchronous_commit and
// full_page_writes off unless DOGPILE_PG_DURABLE=1 (testharness.DurableEnv;
// scripts/bench-write.sh sets it, so that commits are durable as in
// production); to measure against another server, point DOGPILE_BENCH_PG
// at one (a keyword/value DSN of a user that may create
// databases, e.g. "host=127.0.0.1 port=5433 user=postgres dbname=postgres
// sslmode=disable"): the benchmark creates and drops its databases there.
// The server settings in use are logged (--- BENCH: BenchmarkWrites/…).
// DOGPILE_BENCH_WRITE_ROTATE=k runs the modes of each case in an order
// rotated by k. DOGPILE_BENCH_FEED=1 measures the writes with the
// PostgreSQL invalidation feed: the triggers on the tables (every mode) and
// a listener on the plugin (memory and redis), whose stats are logged.

// wbAuthor is the parent of wbItem (belongs-to).
type wbAuthor struct {
	ID        uint
	Name      string
	Email     string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// wbItem is the row the writes change: a few columns of common types, time
// columns, a belongs-to and a has-many association.
type wbItem struct {
	ID        uint
	Name      string
	Grp       int `gorm:"index"`
	N         int
	Price     int64
	Active    bool
	AuthorID  uint
	Author    wbAuthor
	Notes     []wbNote `gorm:"foreignKey:ItemID"`
	CreatedAt time.Time
	UpdatedAt time.Time
}

// wbNote is a child of wbItem, inserted by the transaction case.
type wbNote struct {
	ID        uint
	ItemID    uint `gorm:"index"`
	Body      string
	CreatedAt time.Time
}

// The seed: wbGroups groups of wbGroupRows items, spread over wbAuthors.
const (
	wbAuthors   = 10
	wbGroups    = 10
	wbGroupRows = 100
	wbItems     = wbGroups * wbGroupRows
	wbWarmup    = 20 // untimed operations before each measurement
)

// wbCounter is a go-redis hook that counts what the client sends: a command
// is one command and one round trip (a script call, EVALSHA or EVAL, is one
// command), a pipeline is one round trip and as many commands as it holds
// (the MULTI and EXEC around a transaction pipeline not counted). While
// recording, it also keeps the names of the commands sent.
type wbCounter struct {
	cmds, rtts atomic.Int64

	mu        sync.Mutex
	recording bool
	names     []string
}

func (c *wbCounter) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (c *wbCounter) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		c.cmds.Add(1)
		c.rtts.Add(1)
		c.record(cmd.Name())
		return next(ctx, cmd)
	}
}

func (c *wbCounter) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		var names []string
		for _, cmd := range cmds {
			if n := strings.ToLower(cmd.Name()); n != "multi" && n != "exec" {
				names = append(names, n)
			}
		}
		if len(names) > 0 {
			c.cmds.Add(int64(len(names)))
			c.rtts.Add(1)
			c.record("pipeline[" + strings.Join(names, " ") + "]")
		}
		return next(ctx, cmds)
	}
}

func (c *wbCounter) record(name string) {
	c.mu.Lock()
	if c.recording {
		c.names = append(c.names, strings.ToLower(name))
	}
	c.mu.Unlock()
}

// startRecording clears the recorded names and records from now on;
// stopRecording returns what was sent meanwhile.
func (c *wbCounter) startRecording() {
	c.mu.Lock()
	c.recording, c.names = true, nil
	c.mu.Unlock()
}

func (c *wbCounter) stopRecording() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recording = false
	return c.names
}

func (c *wbCounter) reset() { c.cmds.Store(0); c.rtts.Store(0) }

// wbEnv is one sub-benchmark's database, seeded, and the plugin's region
// when it has one.
type wbEnv struct {
	db      *gorm.DB
	pool    *countpool.Pool
	region  *region.Region // nil without the plugin
	redis   *wbCounter     // nil unless the region is over Redis
	items   []wbItem
	authors []wbAuthor
}

var wbSeq atomic.Int64

// wbDatabase creates an empty database for b on the harness's PostgreSQL
// server, or on the server DOGPILE_BENCH_PG names, and returns its DSN.
func wbDatabase(b *testing.B) string {
	admin := os.Getenv("DOGPILE_BENCH_PG")
	if admin == "" {
		return testharness.SharedPostgres(b).NewDatabase(b)
	}
	name := fmt.Sprintf("dogpile_bench_write_%d_%d", os.Getpid(), wbSeq.Add(1))
	exec := func(stmt string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		_, err = conn.Exec(ctx, stmt)
		return err
	}
	if err := exec("CREATE DATABASE " + pgx.Identifier{name}.Sanitize()); err != nil {
		b.Fatalf("DOGPILE_BENCH_PG: create database %s: %v", name, err)
	}
	b.Cleanup(func() {
		if err := exec("DROP DATABASE IF EXISTS " + pgx.Identifier{name}.Sanitize() + " WITH (FORCE)"); err != nil {
			b.Logf("DOGPILE_BENCH_PG: drop database %s: %v", name, err)
		}
	})
	return admin + " dbname=" + name // the last dbname wins
}

func wbOpen(b *testing.B, conn gorm.ConnPool) *gorm.DB {
	db, err := gorm.Open(postgres.New(postgres.Config{Conn: conn}), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		b.Fatal(err)
	}
	return db
}

// wbSetup opens a fresh database seeded with the model's rows and, for
// modes "memory" and "redis", registers the plugin with a region of that
// kind as "default".
func wbSetup(b *testing.B, mode string) *wbEnv {
	sqlDB, err := sql.Open("pgx", wbDatabase(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sqlDB.Close() })
	pool := &countpool.Pool{DB: sqlDB}
	env := &wbEnv{pool: pool}

	// Schema and seed without the plugin, then VACUUM ANALYZE: every mode
	// starts from the same tables.
	seed := wbOpen(b, sqlDB)
	wbMust(b, seed.AutoMigrate(&wbAuthor{}, &wbItem{}, &wbNote{}))
	for i := range wbAuthors {
		env.authors = append(env.authors, wbAuthor{Name: fmt.Sprintf("author-%d", i), Email: fmt.Sprintf("a%d@example.com", i)})
	}
	wbMust(b, seed.Create(&env.authors).Error)
	for i := range wbItems {
		env.items = append(env.items, wbItem{
			Name: fmt.Sprintf("item-%d", i), Grp: i % wbGroups, N: i, Price: int64(i) * 3,
			Active: i%2 == 0, AuthorID: env.authors[i%wbAuthors].ID,
		})
	}
	wbMust(b, seed.CreateInBatches(&env.items, 200).Error)
	notes := make([]wbNote, 0, wbItems)
	for _, it := range env.items {
		notes = append(notes, wbNote{ItemID: it.ID, Body: "note of " + it.Name})
	}
	wbMust(b, seed.CreateInBatches(&notes, 200).Error)
	wbMust(b, seed.Exec("VACUUM ANALYZE").Error)
	feed := os.Getenv("DOGPILE_BENCH_FEED") == "1"
	if feed {
		wbMust(b, dogpile.InstallPostgresTriggers(context.Background(), seed))
	}

	env.db = wbOpen(b, pool)
	var backend region.Backend
	switch mode {
	case "no-plugin":
		return env
	case "memory":
		backend = memory.New()
	case "redis":
		env.redis = &wbCounter{}
		client := goredis.NewClient(&goredis.Options{Addr: testharness.SharedRedis(b).Addr, ContextTimeoutEnabled: true})
		client.AddHook(env.redis)
		b.Cleanup(func() { _ = client.Close() })
		prefix := regexp.MustCompile(`[^A-Za-z0-9-]+`).ReplaceAllString(b.Name(), "_")
		rb := redisbackend.New(client, redisbackend.WithPrefix(fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), wbSeq.Add(1))))
		b.Cleanup(func() { _ = rb.Close() })
		backend = rb
	default:
		b.Fatalf("unknown mode %q", mode)
	}
	env.region = region.New(backend, region.WithName("default"), region.WithExpiration(10*time.Minute))
	wbMust(b, env.db.Use(dogpile.New(map[string]*region.Region{"default": env.region})))
	if feed {
		l, err := dogpile.ListenPostgres(context.Background(), env.db)
		wbMust(b, err)
		b.Cleanup(func() { b.Logf("feed listener: %+v", l.Stats()); _ = l.Close() })
	}
	return env
}

func wbMust(b *testing.B, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
}

// wbCases are the writes measured; op runs the i-th one.
var wbCases = []struct {
	name string
	op   func(env *wbEnv, i int) error
}{
	// An autocommit Update of one row by primary key (GORM wraps it in a
	// transaction of its own).
	{"update-one", func(env *wbEnv, i int) error {
		item := &env.items[i%len(env.items)]
		res := env.db.Model(item).Update("n", i)
		if res.Error == nil && res.RowsAffected != 1 {
			return fmt.Errorf("update-one: %d rows affected, want 1", res.RowsAffected)
		}
		return res.Error
	}},
	// A transaction with three writes to different rows of different
	// tables: an item, its author, and a new note of the item.
	{"tx-three-writes", func(env *wbEnv, i int) error {
		item := &env.items[i%len(env.items)]
		author := &env.authors[i%len(env.authors)]
		return env.db.Transaction(func(tx *gorm.DB) error {
			if err := tx.Model(item).Update("n", i).Error; err != nil {
				return err
			}
			if err := tx.Model(author).Update("email", fmt.Sprintf("a%d@example.org", i)).Error; err != nil {
				return err
			}
			return tx.Create(&wbNote{ItemID: item.ID, Body: fmt.Sprintf("note %d", i)}).Error
		})
	}},
	// An Update over a WHERE that changes one group: 100 rows.
	{"update-where-100", func(env *wbEnv, i int) error {
		res := env.db.Model(&wbItem{}).Where("grp = ?", i%wbGroups).Update("n", i)
		if res.Error == nil && res.RowsAffected != wbGroupRows {
			return fmt.Errorf("update-where-100: %d rows affected, want %d", res.RowsAffected, wbGroupRows)
		}
		return res.Error
	}},
}

var wbModes = []string{"no-plugin", "memory", "redis"}

// wbModeOrder returns wbModes rotated by DOGPILE_BENCH_WRITE_ROTATE (0 when
// unset): scripts/bench-write.sh rotates the order from run to run, so that
// whatever running first or last costs is spread over the modes.
func wbModeOrder(b *testing.B) []string {
	k := 0
	if v := os.Getenv("DOGPILE_BENCH_WRITE_ROTATE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			b.Fatalf("DOGPILE_BENCH_WRITE_ROTATE=%q: want a number >= 0", v)
		}
		k = n % len(wbModes)
	}
	return append(slices.Clone(wbModes[k:]), wbModes[:k]...)
}

// wbSettings returns the durability settings of the server env's database
// is on.
func wbSettings(b *testing.B, env *wbEnv) string {
	var out []string
	for _, name := range []string{"server_version", "fsync", "synchronous_commit", "full_page_writes", "wal_sync_method"} {
		var v string
		wbMust(b, env.pool.DB.QueryRow("SHOW "+name).Scan(&v))
		out = append(out, name+"="+v)
	}
	return strings.Join(out, " ")
}

func BenchmarkWrites(b *testing.B) {
	var settings sync.Once
	modes := wbModeOrder(b)
	for _, c := range wbCases {
		b.Run(c.name, func(b *testing.B) {
			for _, mode := range modes {
				b.Run(mode, func(b *testing.B) {
					env := wbSetup(b, mode)
					settings.Do(func() { b.Logf("postgres: %s", wbSettings(b, env)) })
					i := 0
					for ; i < wbWarmup; i++ {
						wbMust(b, c.op(env, i))
					}
					if env.redis != nil {
						// One commit's commands, for the report.
						env.redis.startRecording()
						wbMust(b, c.op(env, i))
						i++
						b.Logf("redis commands of one commit: %s", strings.Join(env.redis.stopRecording(), " "))
						env.redis.reset()
					}
					var errsBefore int64
					if env.region != nil {
						errsBefore = env.region.Stats().Errors
					}
					env.pool.Reset()
					b.ReportAllocs()
					n := 0
					for b.Loop() {
						if err := c.op(env, i); err != nil {
							b.Fatal(err)
						}
						i++
						n++
					}
					b.ReportMetric(float64(env.pool.Queries()+env.pool.Execs())/float64(n), "queries/op")
					if env.redis != nil {
						b.ReportMetric(float64(env.redis.cmds.Load())/float64(n), "redis-cmds/op")
						b.ReportMetric(float64(env.redis.rtts.Load())/float64(n), "redis-rtts/op")
					}
					if env.region != nil {
						if e := env.region.Stats().Errors - errsBefore; e > 0 {
							b.Logf("%d backend errors during the measurement (timeouts?): the numbers are not those of a healthy backend", e)
						}
					}
				})
			}
		})
	}
}
