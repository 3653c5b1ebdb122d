package dogpile_test

// Writes sent through GORM's query chain: Raw("UPDATE … RETURNING …").Find,
// DELETE/INSERT … RETURNING, Count over them, and CTEs that write. They are
// writes: always run (FromCache or not), never answered from or stored in
// the cache, and they invalidate what they write, at commit inside a
// transaction. Raw(…).Scan goes through the row chain and is covered too.

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/region"
)

type wqAccount struct {
	ID      uint
	Name    string
	Balance int
}

// wqOpen registers the plugin over a fresh memory region and creates two
// accounts.
func wqOpen(t *testing.T, db *dbtest.DB) (a, b wqAccount) {
	t.Helper()
	r := region.New(memory.New(), region.WithExpiration(time.Hour))
	dbtest.Must(t, db.Use(dogpile.New(map[string]*region.Region{"default": r})))
	dbtest.Must(t, db.AutoMigrate(&wqAccount{}))
	a, b = wqAccount{Name: "a", Balance: 10}, wqAccount{Name: "b", Balance: 20}
	dbtest.Must(t, db.Create(&a).Error)
	dbtest.Must(t, db.Create(&b).Error)
	return a, b
}

func wqCached(tx *gorm.DB) *gorm.DB { return tx.Scopes(dogpile.FromCache("default")) }

// wqBalances renders every account's balance, through tx.
func wqBalances(t *testing.T, tx *gorm.DB) string {
	t.Helper()
	var as []wqAccount
	dbtest.Must(t, tx.Order("id").Find(&as).Error)
	s := ""
	for _, a := range as {
		s += fmt.Sprintf("%d:%s:%d;", a.ID, a.Name, a.Balance)
	}
	return s
}

// wqCount is the number of accounts, through tx.
func wqCount(t *testing.T, tx *gorm.DB) int64 {
	t.Helper()
	var n int64
	dbtest.Must(t, tx.Model(&wqAccount{}).Count(&n).Error)
	return n
}

// wqFreshAfter caches the balances and the count, runs write, and checks
// that the cached answers right after are the database's, which write
// changed.
func wqFreshAfter(t *testing.T, db *dbtest.DB, write func()) {
	t.Helper()
	balances, count := wqBalances(t, wqCached(db.DB)), wqCount(t, wqCached(db.DB))
	db.Pool.Reset()
	if wqBalances(t, wqCached(db.DB)) != balances || wqCount(t, wqCached(db.DB)) != count || db.Pool.Queries() != 0 {
		t.Fatalf("test bug: the cached reads are not hits (%d queries)", db.Pool.Queries())
	}
	write()
	gotB, wantB := wqBalances(t, wqCached(db.DB)), wqBalances(t, db.DB)
	gotC, wantC := wqCount(t, wqCached(db.DB)), wqCount(t, db.DB)
	if wantB == balances {
		t.Fatalf("test bug: the write changed nothing (%q)", balances)
	}
	if gotB != wantB || gotC != wantC {
		t.Fatalf("stale after a write through the query chain:\n cached %q (count %d)\n     db %q (count %d)\n before %q (count %d)",
			gotB, gotC, wantB, wantC, balances, count)
	}
}

func TestWriteThroughQueryChainInvalidates(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		a, _ := wqOpen(t, db)
		pg := db.Dialect == "postgres"

		t.Run("UpdateReturningFind", func(t *testing.T) {
			wqFreshAfter(t, db, func() {
				var ids []uint
				dbtest.Must(t, db.Raw("UPDATE wq_accounts SET balance = balance + 1 WHERE id = ? RETURNING id", a.ID).Find(&ids).Error)
				if len(ids) != 1 || ids[0] != a.ID {
					t.Fatalf("RETURNING gave %v", ids)
				}
			})
		})
		t.Run("InsertReturningFind", func(t *testing.T) {
			wqFreshAfter(t, db, func() {
				var ids []uint
				dbtest.Must(t, db.Raw("INSERT INTO wq_accounts (name, balance) VALUES (?, ?) RETURNING id", "c", 30).Find(&ids).Error)
				if len(ids) != 1 {
					t.Fatalf("RETURNING gave %v", ids)
				}
			})
		})
		t.Run("InsertReturningFindIntoStruct", func(t *testing.T) {
			wqFreshAfter(t, db, func() {
				var got wqAccount
				dbtest.Must(t, db.Raw("INSERT INTO wq_accounts (name, balance) VALUES (?, ?) RETURNING *", "d", 40).Find(&got).Error)
				if got.ID == 0 || got.Name != "d" {
					t.Fatalf("RETURNING * gave %+v", got)
				}
			})
		})
		t.Run("DeleteReturningFind", func(t *testing.T) {
			extra := wqAccount{Name: "doomed", Balance: 1}
			dbtest.Must(t, db.Create(&extra).Error)
			wqFreshAfter(t, db, func() {
				var names []string
				dbtest.Must(t, db.Raw("DELETE FROM wq_accounts WHERE id = ? RETURNING name", extra.ID).Find(&names).Error)
				if len(names) != 1 || names[0] != "doomed" {
					t.Fatalf("RETURNING gave %v", names)
				}
			})
		})
		t.Run("InsertReturningScan", func(t *testing.T) {
			wqFreshAfter(t, db, func() {
				var ids []uint
				dbtest.Must(t, db.Raw("INSERT INTO wq_accounts (name, balance) VALUES (?, ?) RETURNING id", "e", 50).Scan(&ids).Error)
				if len(ids) != 1 {
					t.Fatalf("RETURNING gave %v", ids)
				}
			})
		})
		t.Run("UpdateReturningCount", func(t *testing.T) {
			wqFreshAfter(t, db, func() {
				var n int64
				// Count over raw SQL counts the rows it returns.
				dbtest.Must(t, db.Raw("UPDATE wq_accounts SET balance = balance + 1 RETURNING id").Count(&n).Error)
				if n < 2 {
					t.Fatalf("Count of UPDATE … RETURNING = %d", n)
				}
			})
		})
		if pg { // data-modifying statements in WITH are PostgreSQL's
			t.Run("WritingCTEFind", func(t *testing.T) {
				wqFreshAfter(t, db, func() {
					var ids []uint
					dbtest.Must(t, db.Raw("WITH u AS (UPDATE wq_accounts SET balance = balance + 1 WHERE id = ? RETURNING id) SELECT id FROM u", a.ID).Find(&ids).Error)
					if len(ids) != 1 || ids[0] != a.ID {
						t.Fatalf("CTE gave %v", ids)
					}
				})
			})
			t.Run("WritingCTECount", func(t *testing.T) {
				wqFreshAfter(t, db, func() {
					var n int64
					dbtest.Must(t, db.Raw("WITH d AS (INSERT INTO wq_accounts (name, balance) VALUES ('f', 60) RETURNING id) SELECT count(*) FROM d").Count(&n).Error)
					if n != 1 {
						t.Fatalf("CTE count = %d", n)
					}
				})
			})
		} else { // SQLite: a WITH prefix on the write itself
			t.Run("WithPrefixedUpdateFind", func(t *testing.T) {
				wqFreshAfter(t, db, func() {
					var ids []uint
					dbtest.Must(t, db.Raw("WITH t AS (SELECT ? AS id) UPDATE wq_accounts SET balance = balance + 1 WHERE id IN (SELECT id FROM t) RETURNING id", a.ID).Find(&ids).Error)
					if len(ids) != 1 || ids[0] != a.ID {
						t.Fatalf("WITH … UPDATE gave %v", ids)
					}
				})
			})
		}
	})
}

// With FromCache on a write, the write runs every time, against the
// database, and nothing is stored for it.
func TestWriteThroughQueryChainFromCacheRuns(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		a, _ := wqOpen(t, db)
		balance := func() int {
			var got wqAccount
			dbtest.Must(t, db.First(&got, a.ID).Error)
			return got.Balance
		}
		start := balance()
		db.Pool.Reset()
		for i := 0; i < 2; i++ {
			var ids []uint
			dbtest.Must(t, wqCached(db.DB).Raw("UPDATE wq_accounts SET balance = balance + 1 WHERE id = ? RETURNING id", a.ID).Find(&ids).Error)
			if len(ids) != 1 || ids[0] != a.ID {
				t.Fatalf("call %d: RETURNING gave %v", i, ids)
			}
		}
		if n := db.Pool.Queries(); n != 2 {
			t.Errorf("two FromCache UPDATE … RETURNING finds made %d queries; want 2", n)
		}
		if got := balance(); got != start+2 {
			t.Errorf("balance after two FromCache updates = %d; want %d (each runs)", got, start+2)
		}

		db.Pool.Reset()
		for i := 0; i < 2; i++ {
			var n int64
			dbtest.Must(t, wqCached(db.DB).Raw("UPDATE wq_accounts SET balance = balance + 10 WHERE id = ? RETURNING id", a.ID).Count(&n).Error)
		}
		if n := db.Pool.Queries(); n != 2 {
			t.Errorf("two FromCache UPDATE … RETURNING counts made %d queries; want 2", n)
		}
		if got := balance(); got != start+22 {
			t.Errorf("balance after two FromCache counts = %d; want %d (each runs)", got, start+22)
		}

		db.Pool.Reset()
		for i := 0; i < 2; i++ {
			var ids []uint
			dbtest.Must(t, wqCached(db.DB).Raw("INSERT INTO wq_accounts (name, balance) VALUES (?, ?) RETURNING id", "x", 1).Find(&ids).Error)
		}
		if n := db.Pool.Queries(); n != 2 {
			t.Errorf("two FromCache INSERT … RETURNING finds made %d queries; want 2", n)
		}
		if got := wqCount(t, db.DB); got != 4 {
			t.Errorf("accounts after two FromCache inserts = %d; want 4", got)
		}
	})
}

// Inside a transaction, a write through the query chain is queued for the
// commit, and makes the transaction dirty: its later reads go to the
// database, which has its write.
func TestWriteThroughQueryChainInTransaction(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		a, _ := wqOpen(t, db)
		update := func(tx *gorm.DB) {
			var ids []uint
			dbtest.Must(t, tx.Raw("UPDATE wq_accounts SET balance = balance + 100 WHERE id = ? RETURNING id", a.ID).Find(&ids).Error)
		}
		t.Run("Commit", func(t *testing.T) {
			before := wqBalances(t, wqCached(db.DB))
			dbtest.Must(t, db.Transaction(func(tx *gorm.DB) error {
				update(tx)
				if got, want := wqBalances(t, wqCached(tx)), wqBalances(t, tx); got != want || got == before {
					t.Errorf("FromCache read after its own write in the transaction = %q; want the database's %q", got, want)
				}
				// Outside, the committed data, still a hit.
				db.Pool.Reset()
				if got := wqBalances(t, wqCached(db.DB)); got != before || db.Pool.Queries() != 0 {
					t.Errorf("outside during the transaction: %q (%d queries); want the committed %q as a hit", got, db.Pool.Queries(), before)
				}
				return nil
			}))
			if got, want := wqBalances(t, wqCached(db.DB)), wqBalances(t, db.DB); got != want || got == before {
				t.Fatalf("right after the commit: cached %q, db %q, before %q", got, want, before)
			}
		})
		t.Run("Rollback", func(t *testing.T) {
			before := wqBalances(t, wqCached(db.DB))
			err := db.Transaction(func(tx *gorm.DB) error {
				update(tx)
				return errors.New("roll back")
			})
			if err == nil {
				t.Fatal("the transaction did not fail")
			}
			db.Pool.Reset()
			if got := wqBalances(t, wqCached(db.DB)); got != before || db.Pool.Queries() != 0 {
				t.Fatalf("after the rollback: %q (%d queries); want %q as a hit", got, db.Pool.Queries(), before)
			}
		})
	})
}
