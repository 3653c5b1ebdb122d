package dogpile_test

import (
	"errors"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/dogpile-go/dogpile"
	redisbackend "github.com/dogpile-go/dogpile/backends/redis"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

// strictItem is the row the strict-mode tests write.
type strictItem struct {
	ID    uint
	Value int
}

// strictSetup opens the plugin over a Redis region on a server of the
// test's own, with the row (1, 1) read once through the cache.
func strictSetup(t *testing.T, db *dbtest.DB, opts ...dogpile.PluginOption) *testharness.RedisServer {
	t.Helper()
	srv := testharness.Redis(t)
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { _ = client.Close() })
	r := region.New(redisbackend.New(client), region.WithExpiration(time.Hour))
	t.Cleanup(func() { _ = r.Close() })
	dbtest.Must(t, db.Use(dogpile.New(map[string]*region.Region{"default": r}, opts...)))
	dbtest.Must(t, db.AutoMigrate(&strictItem{}))
	dbtest.Must(t, db.Create(&strictItem{ID: 1, Value: 1}).Error)
	if v := strictCached(t, db); v != 1 {
		t.Fatalf("cached value %d, want 1", v)
	}
	return srv
}

func strictCached(t *testing.T, db *dbtest.DB) int {
	t.Helper()
	var it strictItem
	dbtest.Must(t, db.Scopes(dogpile.FromCache("default")).First(&it, 1).Error)
	return it.Value
}

// strictStored reads the row from the database, past the cache.
func strictStored(t *testing.T, db *dbtest.DB) int {
	t.Helper()
	var v int
	dbtest.Must(t, db.Raw("SELECT value FROM strict_items WHERE id = 1").Scan(&v).Error)
	return v
}

// TestStrictInvalidationRollsBack: under WithStrictInvalidation, with the
// region's Redis down, every way of writing fails with ErrInvalidationFailed
// and nothing is committed: a transaction (rolled back at Commit), an
// autocommit Update, a raw Exec. Once Redis is back, writes commit and
// invalidate again.
func TestStrictInvalidationRollsBack(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		srv := strictSetup(t, db, dogpile.WithStrictInvalidation())
		srv.Kill()
		writes := map[string]func() error{
			"transaction": func() error {
				return db.Transaction(func(tx *gorm.DB) error {
					return tx.Model(&strictItem{}).Where("id = ?", 1).Update("value", 2).Error
				})
			},
			"autocommit update": func() error {
				return db.Session(&gorm.Session{SkipDefaultTransaction: true}).
					Model(&strictItem{}).Where("id = ?", 1).Update("value", 3).Error
			},
			"update in GORM's default transaction": func() error {
				return db.Model(&strictItem{}).Where("id = ?", 1).Update("value", 4).Error
			},
			"exec": func() error { return db.Exec("UPDATE strict_items SET value = 5 WHERE id = 1").Error },
		}
		for name, write := range writes {
			err := write()
			if !errors.Is(err, dogpile.ErrInvalidationFailed) {
				t.Errorf("%s with Redis down: err = %v; want ErrInvalidationFailed", name, err)
			}
			if v := strictStored(t, db); v != 1 {
				t.Fatalf("%s with Redis down committed: the row holds %d", name, v)
			}
		}
		srv.Restart(t)
		var err error
		deadline := time.Now().Add(10 * time.Second)
		for {
			err = db.Model(&strictItem{}).Where("id = ?", 1).Update("value", 6).Error
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		dbtest.Must(t, err)
		if v := strictCached(t, db); v != 6 {
			t.Fatalf("after Redis came back the cache served %d, want 6", v)
		}
	})
}

// TestDefaultInvalidationCommits: without WithStrictInvalidation a cache
// outage never fails a write: the same writes commit, and this process
// does not serve the old row meanwhile.
func TestDefaultInvalidationCommits(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		srv := strictSetup(t, db)
		srv.Kill()
		dbtest.Must(t, db.Transaction(func(tx *gorm.DB) error {
			return tx.Model(&strictItem{}).Where("id = ?", 1).Update("value", 2).Error
		}))
		dbtest.Must(t, db.Exec("UPDATE strict_items SET value = 3 WHERE id = 1").Error)
		if v := strictStored(t, db); v != 3 {
			t.Fatalf("the row holds %d, want 3", v)
		}
		if v := strictCached(t, db); v != 3 {
			t.Fatalf("with Redis down the cache served %d, want 3", v)
		}
	})
}
