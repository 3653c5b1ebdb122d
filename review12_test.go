package dogpile_test

import (
	"context"
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

// review12Timeout is the Redis operation timeout of these tests; the
// README promises that a caller operation, a commit among them, spends at
// most three times it on Redis during an outage.
const review12Timeout = 200 * time.Millisecond

// TestReview12CommitLatencyTwoRegions: a plugin over two regions on one
// Redis (the breaker at its default). With Redis paused, one transaction's
// Commit writes its first phase to each region and then its second phase to
// each, one backend timeout apiece (invalidate.go apply loops over the
// regions with no budget): 4 timeouts, past the README's 3x bound. With
// WithStrictInvalidation it is the same: both first phases fail, then both
// second phases are attempted.
func TestReview12CommitLatencyTwoRegions(t *testing.T) {
	for _, strict := range []bool{false, true} {
		name := "default"
		var opts []dogpile.PluginOption
		if strict {
			name = "strict"
			opts = append(opts, dogpile.WithStrictInvalidation())
		}
		t.Run(name, func(t *testing.T) {
			db := dbtest.SQLite(t)
			srv := testharness.Redis(t)
			client := goredis.NewClient(&goredis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, MaxRetries: -1})
			t.Cleanup(func() { _ = client.Close() })
			raw := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
			t.Cleanup(func() { _ = raw.Close() })
			b := redisbackend.New(client, redisbackend.WithTimeout(review12Timeout))
			t.Cleanup(func() { _ = b.Close() })
			regions := map[string]*region.Region{
				"default": region.New(b, region.WithName("default"), region.WithExpiration(time.Hour)),
				"long":    region.New(b, region.WithName("long"), region.WithExpiration(24*time.Hour)),
			}
			for _, r := range regions {
				t.Cleanup(func() { _ = r.Close() })
			}
			dbtest.Must(t, db.Use(dogpile.New(regions, opts...)))
			dbtest.Must(t, db.AutoMigrate(&strictItem{}))
			dbtest.Must(t, db.Create(&strictItem{ID: 1, Value: 1}).Error)
			if v := strictCached(t, db); v != 1 {
				t.Fatalf("cached value %d, want 1", v)
			}
			// Warm connections, then pause every client of the server.
			if err := client.Ping(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
			if err := raw.Do(context.Background(), "CLIENT", "PAUSE", "4000", "ALL").Err(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = raw.Do(context.Background(), "CLIENT", "UNPAUSE").Err() })
			start := time.Now()
			err := db.Transaction(func(tx *gorm.DB) error {
				return tx.Model(&strictItem{}).Where("id = ?", 1).Update("value", 2).Error
			})
			took := time.Since(start)
			t.Logf("commit took %v (err %v)", took, err)
			if bound := 3*review12Timeout + 50*time.Millisecond; took > bound {
				t.Fatalf("a commit during a Redis pause took %v; the README bounds it at 3x the %v timeout", took, review12Timeout)
			}
		})
	}
}
