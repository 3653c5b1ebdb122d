package crossproc

import (
	"sync"
	"testing"

	goredis "github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/dogpile-go/dogpile/internal/countpool"
	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

// TestPluginOnRedisCluster runs the plugin on a 3-node Redis Cluster: hits,
// invalidation by a committed write seen by another instance, and a
// stampede of 50 goroutines split over two instances (each with its own
// client, backend, region and database handle, as two processes would
// have) reaching the database once.
func TestPluginOnRedisCluster(t *testing.T) {
	cluster := testharness.RedisCluster(t, 3)
	prefix := uniquePrefix(t)
	path := newSQLiteFile(t, 1)
	must(t, func() error {
		db, _ := openSQLite(t, path)
		return db.Create(&Item{ID: 2, Name: "two", Value: 20}).Error
	}())
	type instance struct {
		db   *gorm.DB
		pool *countpool.Pool
		r    *region.Region
	}
	var inst [2]instance
	for i := range inst {
		c := goredis.NewUniversalClient(&goredis.UniversalOptions{Addrs: cluster.Addrs, ContextTimeoutEnabled: true})
		t.Cleanup(func() { _ = c.Close() })
		if _, ok := c.(*goredis.ClusterClient); !ok {
			t.Fatalf("UniversalClient over %d addresses is a %T; want a cluster client", len(cluster.Addrs), c)
		}
		db, pool := openSQLite(t, path)
		r := sharedRegion(t, newBackend(t, c, prefix))
		usePlugin(t, db, r)
		inst[i] = instance{db, pool, r}
	}
	a, b := inst[0], inst[1]

	// Hits: a fills, a and b hit.
	a.pool.Reset()
	b.pool.Reset()
	for _, in := range []instance{a, a, b, b} {
		v, err := cachedValue(in.db)
		must(t, err)
		if v != 1 {
			t.Fatalf("read %d; want 1", v)
		}
	}
	if q := a.pool.Queries() + b.pool.Queries(); q != 1 {
		t.Errorf("4 reads made %d queries; want 1", q)
	}
	if h := a.r.Stats().Hits + b.r.Stats().Hits; h != 3 {
		t.Errorf("%d hits; want 3", h)
	}

	// Invalidation: a write committed through b is seen by a at once.
	must(t, b.db.Transaction(func(tx *gorm.DB) error {
		return tx.Model(&Item{}).Where("id = ?", 1).Update("value", 5).Error
	}))
	if v, err := cachedValue(a.db); err != nil || v != 5 {
		t.Fatalf("after the commit, read %d (%v); want 5", v, err)
	}
	if v, err := cachedValue(b.db); err != nil || v != 5 {
		t.Fatalf("after the commit, read %d (%v); want 5", v, err)
	}

	// Stampede on a cold key: 25 goroutines in each instance.
	a.pool.Reset()
	b.pool.Reset()
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		in := inst[i%2]
		wg.Go(func() {
			<-start
			var it Item
			if err := in.db.Scopes(fromCacheDefault()).First(&it, 2).Error; err != nil {
				errs <- err
				return
			}
			if it.Value != 20 {
				errs <- errValue(it.Value)
			}
		})
	}
	close(start)
	waitGroup(t, &wg)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if q := a.pool.Queries() + b.pool.Queries(); q != 1 {
		t.Errorf("cluster stampede: 50 goroutines made %d queries; want 1", q)
	}
	t.Logf("stats a %+v, b %+v", a.r.Stats(), b.r.Stats())
}
