package dogpile_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	redisbackend "github.com/dogpile-go/dogpile/backends/redis"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

type foreignPostRow struct {
	ID    uint
	Value int
}

func (foreignPostRow) TableName() string { return "foreign_post_rows" }

// slowPost delays the second phase (delta -1) of a tag bump once armed, as
// a slow Redis does, and says when it started.
type slowPost struct {
	region.Proxy
	armed   atomic.Bool
	started chan struct{}
}

func (b *slowPost) BumpTags(ctx context.Context, counters, markers []string, delta int64, lease time.Duration) error {
	if delta < 0 && b.armed.CompareAndSwap(true, false) {
		close(b.started)
		time.Sleep(600 * time.Millisecond)
	}
	return b.Proxy.BumpTags(ctx, counters, markers, delta, lease)
}

// A write in a transaction the plugin cannot follow (begun on a pinned
// connection) keeps this process's reads of its table off the cache until
// its second phase has landed, not only until its lease ends: an entry
// another process filled during the transaction lives until that second
// phase kills it. The second phase is made slow (a slow Redis); a read in
// this process while it is under way must still see the committed value.
// Before, the write was dropped when a reader took it to send the second
// phase, and a concurrent read was served the entry filled before the
// commit.
func TestForeignSecondPhaseStillBypasses(t *testing.T) {
	const lease = time.Second
	path := filepath.Join(t.TempDir(), "fw.db")
	open := func() *gorm.DB {
		sqlDB, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_busy_timeout=10000&_txlock=immediate")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sqlDB.Close() })
		db, err := gorm.Open(sqlite.New(sqlite.Config{Conn: sqlDB}), &gorm.Config{Logger: logger.Discard})
		if err != nil {
			t.Fatal(err)
		}
		return db
	}
	srv := testharness.SharedRedis(t)
	backend := func() region.Backend {
		c := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
		b := redisbackend.New(c, redisbackend.WithPrefix(t.Name()), redisbackend.WithTimeout(2*time.Second))
		t.Cleanup(func() { _ = b.Close(); _ = c.Close() })
		return b
	}
	here, other := open(), open()
	sp := &slowPost{Proxy: region.Proxy{Next: backend()}, started: make(chan struct{})}
	rHere := region.New(sp, region.WithName("default"), region.WithExpiration(time.Hour), region.WithInvalidationLease(lease))
	rOther := region.New(backend(), region.WithName("default"), region.WithExpiration(time.Hour), region.WithInvalidationLease(lease))
	defer rHere.Close()
	defer rOther.Close()
	dbtest.Must(t, here.Use(dogpile.New(map[string]*region.Region{"default": rHere})))
	dbtest.Must(t, other.Use(dogpile.New(map[string]*region.Region{"default": rOther})))
	dbtest.Must(t, here.AutoMigrate(&foreignPostRow{}))
	dbtest.Must(t, here.Create(&foreignPostRow{ID: 1, Value: 1}).Error)
	read := func(db *gorm.DB) int {
		var v foreignPostRow
		dbtest.Must(t, db.Scopes(dogpile.FromCache("default")).First(&v, 1).Error)
		return v.Value
	}

	// The next second phase is slow: the first one sent after the setup's
	// writes is the transaction's, by whichever read finds it due (on a
	// slow machine, possibly the read within the lease: then the check
	// below reads after it landed, and cannot fail).
	sp.armed.Store(true)
	var wrote time.Time
	// A transaction the plugin cannot follow (begun on a pinned connection).
	dbtest.Must(t, here.Connection(func(c *gorm.DB) error {
		return c.Transaction(func(tx *gorm.DB) error {
			wrote = time.Now()
			if err := tx.Model(&foreignPostRow{}).Where("id = ?", 1).Update("value", 2).Error; err != nil {
				return err
			}
			// Another process fills the entry from the data before the
			// commit, after the first phase: the entry dies a lease after
			// its fill, later than this process's lease ends.
			time.Sleep(400 * time.Millisecond)
			if v := read(other); v != 1 {
				t.Errorf("other process during the transaction: %d", v)
			}
			return nil
		})
	}))
	if v := read(here); v != 2 {
		t.Fatalf("this process within the lease: %d; want 2", v)
	}
	time.Sleep(time.Until(wrote.Add(lease + 50*time.Millisecond)))
	done := make(chan int, 1)
	go func() { done <- read(here) }() // takes the due write, sends its second phase
	<-sp.started
	if v := read(here); v != 2 {
		t.Errorf("this process, after the commit, while the second phase is under way: %d; want 2 (served the entry filled before the commit)", v)
	}
	if v := <-done; v != 2 {
		t.Errorf("the reader that sent the second phase: %d", v)
	}
}

// A second phase that panics (here an observer of the region's) still
// drops its write: the table is served from the cache again afterwards
// rather than bypassed for as long as the process lives.
func TestForeignSecondPhasePanicDropsWrite(t *testing.T) {
	const lease = 200 * time.Millisecond
	db := dbtest.SQLite(t)
	var boom atomic.Bool
	obs := region.ObserverFunc(func(_ context.Context, e region.Event) {
		if e.Kind == region.EventInvalidated && boom.CompareAndSwap(true, false) {
			panic("observer")
		}
	})
	r := region.New(memory.New(), region.WithName("default"), region.WithExpiration(time.Hour),
		region.WithInvalidationLease(lease), region.WithObserver(obs))
	defer r.Close()
	dbtest.Must(t, db.Use(dogpile.New(map[string]*region.Region{"default": r})))
	dbtest.Must(t, db.AutoMigrate(&foreignPostRow{}))
	dbtest.Must(t, db.Create(&foreignPostRow{ID: 1, Value: 1}).Error)
	read := func() (int, dogpile.Outcome) {
		var v foreignPostRow
		q := db.Scopes(dogpile.FromCache("default")).First(&v, 1)
		dbtest.Must(t, q.Error)
		return v.Value, dogpile.OutcomeOf(q)
	}
	dbtest.Must(t, db.Connection(func(c *gorm.DB) error {
		return c.Transaction(func(tx *gorm.DB) error {
			return tx.Model(&foreignPostRow{}).Where("id = ?", 1).Update("value", 2).Error
		})
	}))
	time.Sleep(lease + 50*time.Millisecond) // the write's lease ends
	boom.Store(true)
	func() {
		defer func() {
			if p := recover(); p != "observer" {
				t.Fatalf("the read sending the second phase: recovered %v; want the observer's panic", p)
			}
		}()
		read()
	}()
	for _, want := range []dogpile.Outcome{dogpile.Miss, dogpile.Hit} {
		if v, o := read(); v != 2 || o != want {
			t.Fatalf("read after the panic: %d, %v; want 2, %v", v, o, want)
		}
	}
}
