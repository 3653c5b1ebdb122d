package crossproc

import (
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/internal/testharness"
)

// TestJoinedFlightAfterCommit is the mechanism behind the stale reads of
// TestRedisKilledMidWorkload, made deterministic: a read starts a slow
// query (its PostgreSQL snapshot predates the commit below), a write
// commits through the plugin, and a read begun after that commit returned
// must see the write. It must not wait for the slow query's answer, which
// is older than the commit.
func TestJoinedFlightAfterCommit(t *testing.T) {
	srv := testharness.SharedRedis(t)
	dsn := newPostgresDB(t, 1)
	db, _ := openPostgres(t, dsn)
	r := sharedRegion(t, newBackend(t, newRedisClient(t, srv.Addr), uniquePrefix(t)))
	usePlugin(t, db, r)
	read := func() (int64, error) {
		var it Item
		err := db.Scopes(dogpile.FromCache("default", dogpile.WithTables("items"))).Raw(slowSQL).Find(&it).Error
		return it.Value, err
	}
	type result struct {
		v   int64
		err error
	}
	first := make(chan result, 1)
	go func() {
		v, err := read()
		first <- result{v, err}
	}()
	waitSleeping(t, db) // the first read's query runs, on the old snapshot
	must(t, db.Transaction(func(tx *gorm.DB) error {
		return tx.Model(&Item{}).Where("id = ?", 1).Update("value", 2).Error
	}))
	// The commit returned: a read that starts now must see 2.
	second := make(chan result, 1)
	go func() {
		v, err := read()
		second <- result{v, err}
	}()
	for i, ch := range []chan result{first, second} {
		select {
		case res := <-ch:
			must(t, res.err)
			if i == 0 && res.v != 1 {
				t.Errorf("the read begun before the commit returned %d; want 1", res.v)
			}
			if i == 1 && res.v != 2 {
				t.Errorf("the read begun after the commit returned %d; want 2 (stats %+v)", res.v, r.Stats())
			}
		case <-time.After(eventually):
			t.Fatal("a read did not return")
		}
	}
}
