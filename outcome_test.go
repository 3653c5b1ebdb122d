package dogpile_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/region"
)

type OutcomeItem struct {
	ID   uint
	Name string
}

// outcomeRig is a database with two regions: "default", regenerating
// soft-invalidated answers in the background (so a caller gets the stale
// one), and "gated", whose backend holds the store of an answer until the
// test releases it (a stampede's waiters).
func outcomeRig(t *testing.T, db *dbtest.DB) (def *region.Region, gated *region.Region, g *invGate) {
	t.Helper()
	def = region.New(memory.New(), region.WithName("default"), region.WithAsyncRegeneration(1))
	g = newInvGate()
	gated = region.New(g, region.WithName("gated"))
	t.Cleanup(func() { _ = def.Close(); _ = gated.Close() })
	dbtest.Must(t, db.Use(dogpile.New(map[string]*region.Region{"default": def, "gated": gated})))
	dbtest.Must(t, db.AutoMigrate(&OutcomeItem{}))
	dbtest.Must(t, db.Create(&[]OutcomeItem{{Name: "a"}, {Name: "b"}}).Error)
	return def, gated, g
}

func wantOutcome(t *testing.T, what string, tx *gorm.DB, want dogpile.Outcome) {
	t.Helper()
	if tx.Error != nil {
		t.Fatalf("%s: %v", what, tx.Error)
	}
	if got := dogpile.OutcomeOf(tx); got != want {
		t.Fatalf("%s: OutcomeOf = %v, want %v", what, got, want)
	}
}

// The finishers a query may end with, each a query of its own.
var outcomeFinishers = []struct {
	name string
	run  func(db *gorm.DB) *gorm.DB
}{
	{"First", func(db *gorm.DB) *gorm.DB { var it OutcomeItem; return db.First(&it, 1) }},
	{"Find", func(db *gorm.DB) *gorm.DB { var its []OutcomeItem; return db.Order("id").Find(&its) }},
	{"Count", func(db *gorm.DB) *gorm.DB { var n int64; return db.Model(&OutcomeItem{}).Count(&n) }},
	{"Pluck", func(db *gorm.DB) *gorm.DB {
		var names []string
		return db.Model(&OutcomeItem{}).Order("id").Pluck("name", &names)
	}},
}

// TestOutcomeOf: each finisher reports not cached without FromCache, a
// miss, then a hit, a stale hit after a soft invalidation, and what a
// stampede's waiters and leader were; FOR UPDATE, a transaction that wrote
// and a raw write with FromCache report bypassed.
func TestOutcomeOf(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		ctx := context.Background()
		def, gated, g := outcomeRig(t, db)
		cached := func(name string) *gorm.DB { return db.Scopes(dogpile.FromCache(name)) }
		for _, f := range outcomeFinishers {
			wantOutcome(t, f.name+" without FromCache", f.run(db.DB), dogpile.NotCached)
			wantOutcome(t, f.name+" first", f.run(cached("default")), dogpile.Miss)
			wantOutcome(t, f.name+" again", f.run(cached("default")), dogpile.Hit)
		}
		dbtest.Must(t, def.Invalidate(ctx, false)) // soft: served stale while made again
		for _, f := range outcomeFinishers {
			wantOutcome(t, f.name+" soft-invalidated", f.run(cached("default")), dogpile.StaleHit)
			// Stale until the background regeneration has stored the answer.
			invWaitFor(t, "the regenerated answer", func() bool {
				tx := f.run(cached("default"))
				o := dogpile.OutcomeOf(tx)
				if o != dogpile.StaleHit && o != dogpile.Hit {
					t.Fatalf("%s while regenerated: %v (%v)", f.name, o, tx.Error)
				}
				return o == dogpile.Hit
			}, func() string { return fmt.Sprintf("%+v", def.Stats()) })
		}

		// A stampede: the leader's store is held until the others wait.
		for _, f := range outcomeFinishers {
			const n = 4
			base := gated.Stats().LockWaits
			g.armed.Store(true)
			g.release = make(chan struct{})
			out := make([]dogpile.Outcome, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					tx := f.run(cached("gated"))
					out[i], errs[i] = dogpile.OutcomeOf(tx), tx.Error
				})
			}
			invWait(t, g.entered, "the leader's store")
			invWaitFor(t, "the waiters", func() bool { return gated.Stats().LockWaits-base == n-1 }, func() string { return "" })
			g.armed.Store(false)
			close(g.release)
			wg.Wait()
			count := map[dogpile.Outcome]int{}
			for i, o := range out {
				if errs[i] != nil {
					t.Fatalf("%s stampede: %v", f.name, errs[i])
				}
				count[o]++
			}
			if count[dogpile.Miss] != 1 || count[dogpile.Waited] != n-1 {
				t.Fatalf("%s stampede outcomes %v; want 1 miss and %d waited", f.name, count, n-1)
			}
		}

		// Bypasses.
		for _, f := range outcomeFinishers {
			if f.name == "Count" && db.Dialect == "postgres" {
				// PostgreSQL refuses FOR UPDATE with an aggregate.
			} else {
				wantOutcome(t, f.name+" FOR UPDATE", f.run(cached("default").Clauses(clause.Locking{Strength: "UPDATE"})), dogpile.Bypassed)
			}
			dbtest.Must(t, db.Transaction(func(tx *gorm.DB) error {
				if err := tx.Model(&OutcomeItem{}).Where("id = ?", 2).Update("name", "b").Error; err != nil {
					return err
				}
				wantOutcome(t, f.name+" in a transaction that wrote", f.run(tx.Scopes(dogpile.FromCache("default"))), dogpile.Bypassed)
				return nil
			}))
		}
		var back []OutcomeItem
		wantOutcome(t, "UPDATE … RETURNING with FromCache",
			cached("default").Raw("UPDATE outcome_items SET name = ? WHERE id = ? RETURNING id, name", "a2", 1).Find(&back), dogpile.Bypassed)
		if len(back) != 1 || back[0].Name != "a2" {
			t.Fatalf("RETURNING gave %+v", back)
		}
	})
}

// TestOutcomeChained: a query chained from the statement of one that hit
// reports its own outcome, not the one it was chained from.
func TestOutcomeChained(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		outcomeRig(t, db)
		var it, it2, it3 OutcomeItem
		dbtest.Must(t, db.Scopes(dogpile.FromCache("default")).First(&it, 1).Error)
		hit := db.Scopes(dogpile.FromCache("default")).First(&it2, 1)
		wantOutcome(t, "the hit", hit, dogpile.Hit)
		var list []OutcomeItem
		wantOutcome(t, "Find chained from the hit", hit.Find(&list), dogpile.Miss)

		hit = db.Scopes(dogpile.FromCache("default")).First(&it3, 1)
		wantOutcome(t, "the hit again", hit, dogpile.Hit)
		wantOutcome(t, "an Exec chained from the hit", hit.Exec("UPDATE outcome_items SET name = ? WHERE id = ?", "b2", 2), dogpile.NotCached)
	})
}
