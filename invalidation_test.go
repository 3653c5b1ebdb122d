package dogpile_test

// Invalidation tests: every write path, asserting a fresh answer right after
// the write returns; precision (writes to one table leave the others cached);
// WithTables, WithKey and InvalidateTables; transactions (commit, rollback,
// savepoints, read-your-writes, clean transactions, locking reads); the
// cache-before-commit race; the invalidation lease; and a randomized
// concurrent readers-and-writers test. Every test runs on SQLite and
// PostgreSQL.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/region"
	"github.com/dogpile-go/dogpile/region/regiontest"
)

// Models. Table names: inv_users, inv_companies, inv_posts, inv_tags,
// inv_user_tags (join table), inv_counters, inv_audits.

type invCompany struct {
	ID   uint
	Name string
}

type invUser struct {
	ID        uint
	Name      string
	Age       int
	CompanyID *uint
	Company   *invCompany
	Posts     []invPost `gorm:"foreignKey:UserID"`
	Tags      []invTag  `gorm:"many2many:inv_user_tags"`
	DeletedAt gorm.DeletedAt
}

type invPost struct {
	ID     uint
	UserID uint
	Title  string
}

type invTag struct {
	ID   uint
	Name string `gorm:"uniqueIndex"`
}

type invCounter struct {
	ID    uint
	Value int64
}

// invAudit invalidates inv_users from its AfterUpdate hook: the pattern for
// a model whose writes change what another table's queries mean.
type invAudit struct {
	ID   uint
	Note string
}

func (a *invAudit) AfterUpdate(tx *gorm.DB) error {
	return dogpile.InvalidateTables(tx, "inv_users")
}

// invOpen registers the plugin over a fresh memory region (made with opts)
// and migrates the models.
func invOpen(t *testing.T, db *dbtest.DB, opts ...region.Option) *region.Region {
	t.Helper()
	return invOpenBackend(t, db, memory.New(), opts...)
}

func invOpenBackend(t *testing.T, db *dbtest.DB, b region.Backend, opts ...region.Option) *region.Region {
	t.Helper()
	r := region.New(b, opts...)
	dbtest.Must(t, db.Use(dogpile.New(map[string]*region.Region{"default": r})))
	dbtest.Must(t, db.AutoMigrate(&invCompany{}, &invUser{}, &invPost{}, &invTag{}, &invCounter{}, &invAudit{}))
	return r
}

// invCached is db with the default FromCache scope.
func invCached(db *dbtest.DB, opts ...dogpile.Option) *gorm.DB {
	return db.Scopes(dogpile.FromCache("default", opts...))
}

// invBind rewrites ? placeholders for the raw *sql.DB of db's dialect.
func invBind(db *dbtest.DB, q string) string {
	if db.Dialect != "postgres" {
		return q
	}
	var sb strings.Builder
	n := 0
	for _, c := range q {
		if c == '?' {
			n++
			fmt.Fprintf(&sb, "$%d", n)
			continue
		}
		sb.WriteRune(c)
	}
	return sb.String()
}

// invQuery renders a query's answer as a string, for comparison.
type invQuery func(t *testing.T, tx *gorm.DB) string

func invUsersQ(t *testing.T, tx *gorm.DB) string {
	t.Helper()
	var us []invUser
	dbtest.Must(t, tx.Order("id").Find(&us).Error)
	return invUsersString(us)
}

func invUsersString(us []invUser) string {
	var sb strings.Builder
	for _, u := range us {
		fmt.Fprintf(&sb, "%d:%s:%d;", u.ID, u.Name, u.Age)
	}
	return sb.String()
}

func invPostsQ(t *testing.T, tx *gorm.DB) string {
	t.Helper()
	var ps []invPost
	dbtest.Must(t, tx.Order("id").Find(&ps).Error)
	var sb strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&sb, "%d:%d:%s;", p.ID, p.UserID, p.Title)
	}
	return sb.String()
}

func invCompaniesQ(t *testing.T, tx *gorm.DB) string {
	t.Helper()
	var cs []invCompany
	dbtest.Must(t, tx.Order("id").Find(&cs).Error)
	var sb strings.Builder
	for _, c := range cs {
		fmt.Fprintf(&sb, "%d:%s;", c.ID, c.Name)
	}
	return sb.String()
}

// invJoinsQ reads users joined with their company.
func invJoinsQ(t *testing.T, tx *gorm.DB) string {
	t.Helper()
	var us []invUser
	dbtest.Must(t, tx.Joins("Company").Order("inv_users.id").Find(&us).Error)
	var sb strings.Builder
	for _, u := range us {
		c := "-"
		if u.Company != nil {
			c = u.Company.Name
		}
		fmt.Fprintf(&sb, "%d:%s@%s;", u.ID, u.Name, c)
	}
	return sb.String()
}

// invHit runs q through the cache and fails unless it was answered without
// reaching the database and equals want.
func invHit(t *testing.T, db *dbtest.DB, q invQuery, want string) {
	t.Helper()
	db.Pool.Reset()
	got := q(t, invCached(db))
	if n := db.Pool.Queries(); n != 0 {
		t.Fatalf("cached query reached the database %d times; want a hit (0)", n)
	}
	if got != want {
		t.Fatalf("cached hit = %q; want %q", got, want)
	}
}

// invFresh checks the core property for one write path: q is cached (a hit),
// write runs, and q through the cache right after answers as the database
// does, which write changed.
func invFresh(t *testing.T, db *dbtest.DB, q invQuery, write func()) {
	t.Helper()
	before := q(t, invCached(db))
	invHit(t, db, q, before)
	write()
	got := q(t, invCached(db))
	truth := q(t, db.DB)
	if truth == before {
		t.Fatalf("test bug: the write changed nothing (%q)", before)
	}
	if got != truth {
		t.Fatalf("stale after write:\n cached %q\n     db %q\n before %q", got, truth, before)
	}
}

// invSeed creates two users and returns them.
func invSeed(t *testing.T, db *dbtest.DB, prefix string) (invUser, invUser) {
	t.Helper()
	a := invUser{Name: prefix + "-a", Age: 30}
	b := invUser{Name: prefix + "-b", Age: 40}
	dbtest.Must(t, db.Create(&a).Error)
	dbtest.Must(t, db.Create(&b).Error)
	return a, b
}

func TestInvWritePaths(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		invOpen(t, db)
		pg := db.Dialect == "postgres"

		t.Run("Create", func(t *testing.T) {
			invSeed(t, db, "create")
			invFresh(t, db, invUsersQ, func() {
				dbtest.Must(t, db.Create(&invUser{Name: "created", Age: 1}).Error)
			})
		})
		t.Run("SaveInsert", func(t *testing.T) {
			invFresh(t, db, invUsersQ, func() {
				dbtest.Must(t, db.Save(&invUser{Name: "saved-new", Age: 2}).Error)
			})
		})
		t.Run("SaveUpdate", func(t *testing.T) {
			a, _ := invSeed(t, db, "save")
			invFresh(t, db, invUsersQ, func() {
				a.Name = "saved-upd"
				dbtest.Must(t, db.Save(&a).Error)
			})
		})
		t.Run("Update", func(t *testing.T) {
			a, _ := invSeed(t, db, "update")
			invFresh(t, db, invUsersQ, func() {
				dbtest.Must(t, db.Model(&invUser{}).Where("id = ?", a.ID).Update("name", "updated").Error)
			})
		})
		t.Run("UpdatesStruct", func(t *testing.T) {
			a, _ := invSeed(t, db, "updates-struct")
			invFresh(t, db, invUsersQ, func() {
				dbtest.Must(t, db.Model(&a).Updates(invUser{Name: "updates-struct-x", Age: 77}).Error)
			})
		})
		t.Run("UpdatesMap", func(t *testing.T) {
			a, _ := invSeed(t, db, "updates-map")
			invFresh(t, db, invUsersQ, func() {
				dbtest.Must(t, db.Model(&invUser{}).Where("id = ?", a.ID).Updates(map[string]any{"age": 88}).Error)
			})
		})
		t.Run("UpdateColumn", func(t *testing.T) {
			a, _ := invSeed(t, db, "update-column")
			invFresh(t, db, invUsersQ, func() {
				dbtest.Must(t, db.Model(&a).UpdateColumn("age", 99).Error)
			})
		})
		t.Run("Delete", func(t *testing.T) {
			// invPost has no DeletedAt: a hard delete.
			a, _ := invSeed(t, db, "delete")
			p := invPost{UserID: a.ID, Title: "doomed"}
			dbtest.Must(t, db.Create(&p).Error)
			invFresh(t, db, invPostsQ, func() {
				dbtest.Must(t, db.Delete(&invPost{}, p.ID).Error)
			})
		})
		t.Run("SoftDelete", func(t *testing.T) {
			a, _ := invSeed(t, db, "soft")
			invFresh(t, db, invUsersQ, func() {
				dbtest.Must(t, db.Delete(&a).Error)
			})
		})
		t.Run("UnscopedDelete", func(t *testing.T) {
			a, _ := invSeed(t, db, "unscoped")
			dbtest.Must(t, db.Delete(&a).Error) // soft-deleted first: only Unscoped sees it
			q := func(t *testing.T, tx *gorm.DB) string { return invUsersQ(t, tx.Unscoped()) }
			invFresh(t, db, q, func() {
				dbtest.Must(t, db.Unscoped().Delete(&a).Error)
			})
		})
		t.Run("AssociationCreate", func(t *testing.T) {
			invFresh(t, db, invPostsQ, func() {
				dbtest.Must(t, db.Create(&invUser{Name: "author", Posts: []invPost{{Title: "p1"}, {Title: "p2"}}}).Error)
			})
		})
		t.Run("Many2manyAppend", func(t *testing.T) {
			u := invUser{Name: "tagged", Tags: []invTag{{Name: "go"}}}
			dbtest.Must(t, db.Create(&u).Error)
			extra := invTag{Name: "sql"}
			dbtest.Must(t, db.Create(&extra).Error)
			joinCount := func(t *testing.T, tx *gorm.DB) string {
				var n int64
				dbtest.Must(t, tx.Table("inv_user_tags").Where("inv_user_id = ?", u.ID).Count(&n).Error)
				return fmt.Sprint(n)
			}
			through := func(t *testing.T, tx *gorm.DB) string {
				var names []string
				dbtest.Must(t, tx.Table("inv_tags").
					Joins("JOIN inv_user_tags ON inv_user_tags.inv_tag_id = inv_tags.id").
					Where("inv_user_tags.inv_user_id = ?", u.ID).Order("inv_tags.name").
					Pluck("inv_tags.name", &names).Error)
				return strings.Join(names, ",")
			}
			beforeThrough := through(t, invCached(db))
			invFresh(t, db, joinCount, func() {
				dbtest.Must(t, db.Model(&u).Association("Tags").Append(&extra))
			})
			if got, want := through(t, invCached(db)), through(t, db.DB); got != want || got == beforeThrough {
				t.Fatalf("query joining through inv_user_tags: cached %q, db %q, before %q", got, want, beforeThrough)
			}
		})
		t.Run("ExecInsert", func(t *testing.T) {
			invFresh(t, db, invUsersQ, func() {
				dbtest.Must(t, db.Exec("INSERT INTO inv_users (name, age) VALUES (?, ?)", "exec-ins", 5).Error)
			})
		})
		t.Run("ExecUpdate", func(t *testing.T) {
			a, _ := invSeed(t, db, "exec-upd")
			invFresh(t, db, invUsersQ, func() {
				dbtest.Must(t, db.Exec("UPDATE inv_users SET age = ? WHERE id = ?", 55, a.ID).Error)
			})
		})
		t.Run("ExecDelete", func(t *testing.T) {
			a, _ := invSeed(t, db, "exec-del")
			invFresh(t, db, invUsersQ, func() {
				dbtest.Must(t, db.Exec("DELETE FROM inv_users WHERE id = ?", a.ID).Error)
			})
		})
		t.Run("ExecUpsert", func(t *testing.T) {
			a, _ := invSeed(t, db, "exec-upsert")
			invFresh(t, db, invUsersQ, func() {
				dbtest.Must(t, db.Exec("INSERT INTO inv_users (id, name, age) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name",
					a.ID, "upserted", a.Age).Error)
			})
		})
		if !pg { // REPLACE INTO is SQLite's; PostgreSQL's upsert is ExecUpsert
			t.Run("ExecReplace", func(t *testing.T) {
				a, _ := invSeed(t, db, "exec-replace")
				invFresh(t, db, invUsersQ, func() {
					dbtest.Must(t, db.Exec("REPLACE INTO inv_users (id, name, age) VALUES (?, ?, ?)", a.ID, "replaced", 3).Error)
				})
			})
		}
		t.Run("ExecTruncate", func(t *testing.T) {
			a, _ := invSeed(t, db, "truncate")
			dbtest.Must(t, db.Create(&invPost{UserID: a.ID, Title: "t"}).Error)
			invFresh(t, db, invPostsQ, func() {
				if pg {
					dbtest.Must(t, db.Exec("TRUNCATE TABLE inv_posts").Error)
				} else {
					dbtest.Must(t, db.Exec("DELETE FROM inv_posts").Error) // SQLite has no TRUNCATE
				}
			})
		})
		t.Run("RawUpdateReturningScan", func(t *testing.T) {
			a, _ := invSeed(t, db, "returning")
			invFresh(t, db, invUsersQ, func() {
				var names []string
				dbtest.Must(t, db.Raw("UPDATE inv_users SET age = age + 1 WHERE id = ? RETURNING name", a.ID).Scan(&names).Error)
				if len(names) != 1 || names[0] != a.Name {
					t.Fatalf("RETURNING gave %v", names)
				}
			})
		})
		t.Run("SkipDefaultTransaction", func(t *testing.T) {
			s := db.Session(&gorm.Session{SkipDefaultTransaction: true})
			a, _ := invSeed(t, db, "skip-tx")
			invFresh(t, db, invUsersQ, func() {
				dbtest.Must(t, s.Create(&invUser{Name: "skip-created"}).Error)
			})
			invFresh(t, db, invUsersQ, func() {
				dbtest.Must(t, s.Model(&invUser{}).Where("id = ?", a.ID).Update("age", 123).Error)
			})
			invFresh(t, db, invUsersQ, func() {
				dbtest.Must(t, s.Delete(&a).Error)
			})
			invFresh(t, db, invUsersQ, func() {
				dbtest.Must(t, s.Exec("UPDATE inv_users SET age = age + 1").Error)
			})
		})
	})
}

// TestInvDDLInvalidatesEverything: statements whose effect cannot be read
// from their SQL invalidate every table. The data is changed behind the
// plugin's back (a raw connection) so that only the invalidate-everything
// path can make the cached answers fresh.
func TestInvDDLInvalidatesEverything(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		invOpen(t, db)
		a, _ := invSeed(t, db, "ddl")
		dbtest.Must(t, db.Create(&invPost{UserID: a.ID, Title: "ddl-post"}).Error)
		dbtest.Must(t, db.Create(&invCompany{Name: "ddl-co"}).Error)

		check := func(t *testing.T, write func()) {
			t.Helper()
			users, posts := invUsersQ(t, invCached(db)), invPostsQ(t, invCached(db))
			invHit(t, db, invUsersQ, users)
			invHit(t, db, invPostsQ, posts)
			_, err := db.Pool.DB.Exec("UPDATE inv_users SET age = age + 1")
			dbtest.Must(t, err)
			_, err = db.Pool.DB.Exec("UPDATE inv_posts SET title = title || '+'")
			dbtest.Must(t, err)
			invHit(t, db, invUsersQ, users) // stale: the plugin saw nothing yet
			write()
			if got, want := invUsersQ(t, invCached(db)), invUsersQ(t, db.DB); got != want {
				t.Errorf("users after DDL: cached %q, db %q", got, want)
			}
			if got, want := invPostsQ(t, invCached(db)), invPostsQ(t, db.DB); got != want {
				t.Errorf("posts after DDL: cached %q, db %q", got, want)
			}
		}
		t.Run("CreateTable", func(t *testing.T) {
			check(t, func() { dbtest.Must(t, db.Exec("CREATE TABLE inv_scratch (id integer)").Error) })
		})
		t.Run("CreateIndexInTransaction", func(t *testing.T) {
			check(t, func() {
				dbtest.Must(t, db.Transaction(func(tx *gorm.DB) error {
					return tx.Exec("CREATE INDEX inv_scratch_idx ON inv_scratch (id)").Error
				}))
			})
		})
		if db.Dialect == "postgres" { // DO is PostgreSQL's
			t.Run("DoBlock", func(t *testing.T) {
				// The DO block writes itself; the plugin cannot read what.
				invFresh(t, db, invCompaniesQ, func() {
					dbtest.Must(t, db.Exec("DO $$ BEGIN UPDATE inv_companies SET name = name || '!'; END $$").Error)
				})
			})
		}
	})
}

// invGate is a backend whose stores of entries can be held: armed, a store
// of an entry key signals entered and blocks until release is closed. Stores
// of tag counters and markers pass.
type invGate struct {
	region.Backend
	armed   atomic.Bool
	entered chan struct{} // one send per held store (buffered)
	release chan struct{}
}

func newInvGate() *invGate {
	return &invGate{Backend: memory.New(), entered: make(chan struct{}, 1024), release: make(chan struct{})}
}

func (g *invGate) hold(items ...region.Item) {
	if !g.armed.Load() {
		return
	}
	for _, it := range items {
		if strings.Contains(it.Key, ":k:") {
			g.entered <- struct{}{}
			<-g.release
			return
		}
	}
}

func (g *invGate) SetMulti(ctx context.Context, items []region.Item) error {
	g.hold(items...)
	return g.Backend.SetMulti(ctx, items)
}

func (g *invGate) SetIf(ctx context.Context, item region.Item, guards []region.Guard) (bool, error) {
	g.hold(item)
	return g.Backend.SetIf(ctx, item, guards)
}

// invWait fails the test if ch does not deliver within a generous bound (a
// deadlock guard, not a timing assertion).
func invWait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(invDeadlockGuard):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// TestInvUnknownWriteRacingFill: a statement that invalidates everything
// (DDL, DO, CALL…) runs while a fill that read the database before it is
// still storing its answer. The fill must not survive the invalidation,
// exactly as it cannot survive a table invalidation (the tag stamps are
// taken before the read).
func TestInvUnknownWriteRacingFill(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		// Held at its store, after its database read (the plugin's answers
		// are its own format, so a codec cannot hold them).
		g := newInvGate()
		r := invOpenBackend(t, db, g)
		invSeed(t, db, "race-all")

		g.armed.Store(true)
		done := make(chan string, 1)
		go func() { done <- invUsersQ(t, invCached(db)) }() // reads, then is held before its store
		invWait(t, g.entered, "the fill to read the database")

		// The data changes, then a statement that invalidates everything.
		if db.Dialect == "postgres" {
			dbtest.Must(t, db.Exec("DO $$ BEGIN UPDATE inv_users SET age = age + 100; END $$").Error)
		} else {
			_, err := db.Pool.DB.Exec("UPDATE inv_users SET age = age + 100")
			dbtest.Must(t, err)
			dbtest.Must(t, db.Exec("CREATE TABLE inv_scratch_race (id integer)").Error)
		}
		g.armed.Store(false)
		close(g.release)
		old := invWait(t, done, "the fill")

		db.Pool.Reset()
		got, want := invUsersQ(t, invCached(db)), invUsersQ(t, db.DB)
		if got != want {
			t.Errorf("an answer read before an invalidate-everything statement was stored after it and is served:\n cached %q\n     db %q\n (fill read %q; stats %+v)", got, want, old, r.Stats())
		}
	})
}

// TestInvWaiterJoinsFlightStartedBeforeCommit: a read that starts after a
// commit returned must not be handed the answer of a query that another
// caller started before that commit (it waits on the same flight). The
// flight's store is refused (its tag stamps are stale), but its answer still
// reaches the callers that joined it.
func TestInvWaiterJoinsFlightStartedBeforeCommit(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		g := newInvGate()
		r := invOpenBackend(t, db, g)
		a, _ := invSeed(t, db, "flight")
		old := invUsersQ(t, db.DB)

		g.armed.Store(true)
		first := make(chan string, 1)
		go func() { first <- invUsersQ(t, invCached(db)) }()
		invWait(t, g.entered, "the first reader's store") // it has read the old data

		dbtest.Must(t, db.Model(&a).Update("name", "flight-new").Error) // committed: Update returned
		want := invUsersQ(t, db.DB)
		if want == old {
			t.Fatal("test bug: the update changed nothing")
		}

		base := r.Stats().LockWaits
		second := make(chan string, 1)
		go func() { second <- invUsersQ(t, invCached(db)) }() // starts after the commit returned
		invWaitFor(t, "the second reader to join the flight", func() bool { return r.Stats().LockWaits > base },
			func() string { return fmt.Sprintf("stats %+v", r.Stats()) })
		g.armed.Store(false)
		close(g.release)
		if got := invWait(t, first, "the first reader"); got != old {
			t.Logf("first reader (started before the commit) got %q", got)
		}
		if got := invWait(t, second, "the second reader"); got != want {
			t.Errorf("a read started after the commit returned got the pre-commit answer of the flight it joined:\n got  %q\n want %q", got, want)
		}
		if got := invUsersQ(t, invCached(db)); got != want {
			t.Errorf("cached after both: %q; want %q", got, want)
		}
	})
}

func TestInvPrecision(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		invOpen(t, db)
		co := invCompany{Name: "acme"}
		dbtest.Must(t, db.Create(&co).Error)
		u := invUser{Name: "p-a", Age: 1, CompanyID: &co.ID}
		dbtest.Must(t, db.Create(&u).Error)

		t.Run("OtherTableStaysCached", func(t *testing.T) {
			users := invUsersQ(t, invCached(db))
			companies := invCompaniesQ(t, invCached(db))
			dbtest.Must(t, db.Create(&invPost{UserID: u.ID, Title: "unrelated"}).Error)
			dbtest.Must(t, db.Exec("UPDATE inv_posts SET title = 'x'").Error)
			invHit(t, db, invUsersQ, users)
			invHit(t, db, invCompaniesQ, companies)
			dbtest.Must(t, db.Model(&u).Update("age", 2).Error)
			invHit(t, db, invCompaniesQ, companies)
		})
		t.Run("JoinsInvalidatedByEitherTable", func(t *testing.T) {
			invFresh(t, db, invJoinsQ, func() {
				dbtest.Must(t, db.Model(&co).Update("name", "acme-2").Error)
			})
			invFresh(t, db, invJoinsQ, func() {
				dbtest.Must(t, db.Model(&u).Update("name", "p-a-2").Error)
			})
		})
		t.Run("SubqueryTable", func(t *testing.T) {
			q := func(t *testing.T, tx *gorm.DB) string {
				return invUsersQ(t, tx.Where("id IN (?)", db.Session(&gorm.Session{NewDB: true}).Table("inv_posts").Select("user_id")))
			}
			p := invPost{UserID: u.ID, Title: "sub"}
			dbtest.Must(t, db.Create(&p).Error)
			other := invUser{Name: "no-posts-yet"}
			dbtest.Must(t, db.Create(&other).Error)
			invFresh(t, db, q, func() {
				dbtest.Must(t, db.Create(&invPost{UserID: other.ID, Title: "now"}).Error)
			})
		})
	})
}

func TestInvRawTables(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		invOpen(t, db)
		a, _ := invSeed(t, db, "raw")
		// A view: its name is all the SQL shows of the table it reads.
		dbtest.Must(t, db.Exec("CREATE VIEW inv_user_names AS SELECT id, name, age FROM inv_users WHERE deleted_at IS NULL").Error)

		t.Run("WithTables", func(t *testing.T) {
			view := func(t *testing.T, tx *gorm.DB) string {
				var us []invUser
				dbtest.Must(t, tx.Raw("SELECT id, name, age FROM inv_user_names ORDER BY id").Find(&us).Error)
				return invUsersString(us)
			}
			cachedView := func(t *testing.T, tx *gorm.DB) string {
				return view(t, tx.Scopes(dogpile.FromCache("default", dogpile.WithTables("inv_users"))))
			}
			before := cachedView(t, db.DB)
			db.Pool.Reset()
			if cachedView(t, db.DB) != before || db.Pool.Queries() != 0 {
				t.Fatalf("raw WithTables query not cached")
			}
			dbtest.Must(t, db.Create(&invPost{UserID: a.ID, Title: "unlisted"}).Error)
			db.Pool.Reset()
			if cachedView(t, db.DB) != before || db.Pool.Queries() != 0 {
				t.Fatalf("write to an unlisted table invalidated a WithTables query")
			}
			dbtest.Must(t, db.Model(&a).Update("name", "raw-renamed").Error)
			if got, want := cachedView(t, db.DB), view(t, db.DB); got != want || got == before {
				t.Fatalf("WithTables(inv_users) after a write to inv_users: cached %q, db %q, before %q", got, want, before)
			}
		})
		t.Run("TablesFromSQL", func(t *testing.T) {
			q := func(t *testing.T, tx *gorm.DB) string {
				var us []invUser
				dbtest.Must(t, tx.Raw("SELECT * FROM inv_users WHERE age > ? AND deleted_at IS NULL ORDER BY id", 0).Find(&us).Error)
				return invUsersString(us)
			}
			before := q(t, invCached(db))
			dbtest.Must(t, db.Create(&invPost{UserID: a.ID, Title: "elsewhere"}).Error)
			invHit(t, db, q, before)
			invFresh(t, db, q, func() {
				dbtest.Must(t, db.Model(&a).Update("age", 31).Error)
			})
		})
	})
}

func TestInvWithKey(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		invOpen(t, db)
		invSeed(t, db, "key")
		named := func(name string, age int) invQuery {
			return func(t *testing.T, tx *gorm.DB) string {
				var us []invUser
				dbtest.Must(t, tx.Scopes(dogpile.FromCache("default", dogpile.WithKey(name))).Where("age > ?", age).Order("id").Find(&us).Error)
				return invUsersString(us)
			}
		}
		a20, a35, other := named("by_age", 20), named("by_age", 35), named("other", 20)
		b20, b35, bo := a20(t, db.DB), a35(t, db.DB), other(t, db.DB)
		// Change the data behind the plugin's back: everything is stale.
		_, err := db.Pool.DB.Exec("UPDATE inv_users SET name = name || '*'")
		dbtest.Must(t, err)
		db.Pool.Reset()
		if a20(t, db.DB) != b20 || a35(t, db.DB) != b35 || other(t, db.DB) != bo || db.Pool.Queries() != 0 {
			t.Fatalf("WithKey queries not cached")
		}

		dbtest.Must(t, dogpile.InvalidateKey(db.DB, "default", "by_age"))
		plain := func(age int) string { return invUsersQ(t, db.Where("age > ?", age)) }
		if got, want := a20(t, db.DB), plain(20); got != want {
			t.Errorf("by_age(20) after InvalidateKey: %q; want %q", got, want)
		}
		if got, want := a35(t, db.DB), plain(35); got != want {
			t.Errorf("by_age(35) after InvalidateKey: %q; want %q", got, want)
		}
		db.Pool.Reset()
		if got := other(t, db.DB); got != bo || db.Pool.Queries() != 0 {
			t.Errorf("InvalidateKey(by_age) touched the entry named other: %q (queries %d); want the old %q as a hit", got, db.Pool.Queries(), bo)
		}
		if err := dogpile.InvalidateKey(db.DB, "nope", "by_age"); !errors.Is(err, dogpile.ErrUnknownRegion) {
			t.Errorf("InvalidateKey on an unknown region: %v", err)
		}
	})
}

func TestInvInvalidateTablesFromHook(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		invOpen(t, db)
		invSeed(t, db, "hook")
		audit := invAudit{Note: "n"}
		dbtest.Must(t, db.Create(&audit).Error)
		before := invUsersQ(t, invCached(db))
		_, err := db.Pool.DB.Exec("UPDATE inv_users SET age = age + 1")
		dbtest.Must(t, err)
		invHit(t, db, invUsersQ, before) // stale, as expected: the plugin saw no write
		dbtest.Must(t, db.Model(&audit).Update("note", "n2").Error)
		if got, want := invUsersQ(t, invCached(db)), invUsersQ(t, db.DB); got != want {
			t.Fatalf("InvalidateTables(inv_users) from an AfterUpdate hook: cached %q, db %q", got, want)
		}
	})
}

func TestInvTransactions(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		invOpen(t, db)
		a, _ := invSeed(t, db, "tx")

		t.Run("Commit", func(t *testing.T) {
			before := invUsersQ(t, invCached(db))
			tx := db.Begin()
			dbtest.Must(t, tx.Error)
			defer tx.Rollback()
			dbtest.Must(t, tx.Model(&a).Update("name", "tx-committed").Error)
			// Outside, during the transaction: the old (committed) data.
			if got := invUsersQ(t, invCached(db)); got != before {
				t.Fatalf("read outside an open transaction = %q; want the committed %q", got, before)
			}
			dbtest.Must(t, tx.Commit().Error)
			if got, want := invUsersQ(t, invCached(db)), invUsersQ(t, db.DB); got != want || got == before {
				t.Fatalf("right after Commit: cached %q, db %q", got, want)
			}
		})
		t.Run("Rollback", func(t *testing.T) {
			before := invUsersQ(t, invCached(db))
			tx := db.Begin()
			dbtest.Must(t, tx.Error)
			dbtest.Must(t, tx.Model(&a).Update("name", "tx-rolled-back").Error)
			dbtest.Must(t, tx.Rollback().Error)
			invHit(t, db, invUsersQ, before)
		})
		t.Run("TransactionFuncError", func(t *testing.T) {
			before := invUsersQ(t, invCached(db))
			err := db.Transaction(func(tx *gorm.DB) error {
				dbtest.Must(t, tx.Model(&a).Update("name", "tx-fn-error").Error)
				return errors.New("nope")
			})
			if err == nil {
				t.Fatal("transaction did not fail")
			}
			invHit(t, db, invUsersQ, before)
		})
		t.Run("NestedSavepointRolledBack", func(t *testing.T) {
			dbtest.Must(t, db.Create(&invPost{UserID: a.ID, Title: "nested"}).Error)
			users := invUsersQ(t, invCached(db))
			posts := invPostsQ(t, invCached(db))
			err := db.Transaction(func(tx *gorm.DB) error {
				if err := tx.Model(&a).Update("name", "outer").Error; err != nil {
					return err
				}
				inner := tx.Transaction(func(tx2 *gorm.DB) error {
					if err := tx2.Model(&invUser{}).Where("id <> ?", a.ID).Update("name", "inner").Error; err != nil {
						return err
					}
					if err := tx2.Model(&invPost{}).Where("1 = 1").Update("title", "inner").Error; err != nil {
						return err
					}
					return errors.New("roll back the savepoint")
				})
				if inner == nil {
					t.Error("inner transaction did not fail")
				}
				return nil
			})
			dbtest.Must(t, err)
			got, want := invUsersQ(t, invCached(db)), invUsersQ(t, db.DB)
			if got != want || got == users || strings.Contains(got, "inner") {
				t.Fatalf("after outer commit: cached %q, db %q, before %q", got, want, users)
			}
			// The inner write to inv_posts was rolled back with its savepoint:
			// the cached posts stay as they were, and stay a hit.
			invHit(t, db, invPostsQ, posts)
			if want := invPostsQ(t, db.DB); want != posts {
				t.Fatalf("test bug: posts changed in the database: %q", want)
			}
		})
		t.Run("ReadYourWrites", func(t *testing.T) {
			before := invUsersQ(t, invCached(db))
			tx := db.Begin()
			dbtest.Must(t, tx.Error)
			dbtest.Must(t, tx.Model(&a).Update("name", "ryw").Error)
			db.Pool.Reset()
			var us []invUser
			dbtest.Must(t, tx.Scopes(dogpile.FromCache("default")).Order("id").Find(&us).Error)
			if n := db.Pool.Queries(); n != 1 {
				t.Errorf("FromCache in a transaction that wrote made %d queries; want 1 (the database)", n)
			}
			if got := invUsersString(us); !strings.Contains(got, ":ryw:") {
				t.Errorf("FromCache in a transaction that wrote = %q; want its own write", got)
			}
			// A locking read in the dirty transaction too.
			db.Pool.Reset()
			dbtest.Must(t, tx.Scopes(dogpile.FromCache("default")).Where("id = ?", a.ID).Find(&us).Error)
			if db.Pool.Queries() != 1 || len(us) != 1 || us[0].Name != "ryw" {
				t.Errorf("second read in dirty transaction: %+v (queries %d)", us, db.Pool.Queries())
			}
			dbtest.Must(t, tx.Rollback().Error)
			invHit(t, db, invUsersQ, before) // nothing was stored from the transaction
		})
		t.Run("CleanTransactionNeverStores", func(t *testing.T) {
			q := func(t *testing.T, tx *gorm.DB) string { return invUsersQ(t, tx.Where("age >= ?", 0)) }
			tx := db.Begin()
			dbtest.Must(t, tx.Error)
			db.Pool.Reset()
			q(t, tx.Scopes(dogpile.FromCache("default"))) // miss inside
			dbtest.Must(t, tx.Commit().Error)
			q(t, invCached(db)) // miss outside: nothing was stored
			if n := db.Pool.Queries(); n != 2 {
				t.Errorf("miss in a clean transaction then outside = %d queries; want 2", n)
			}
			// Now cached: a clean READ COMMITTED transaction may be served
			// from the cache; a SQLite transaction is a snapshot, and reads
			// the database.
			want := q(t, db.DB)
			tx = db.Begin()
			dbtest.Must(t, tx.Error)
			defer tx.Rollback()
			db.Pool.Reset()
			if got := q(t, tx.Scopes(dogpile.FromCache("default"))); got != want {
				t.Errorf("clean transaction read %q; want %q", got, want)
			}
			wantQueries := int64(0)
			if db.Dialect == "sqlite" {
				wantQueries = 1
			}
			if n := db.Pool.Queries(); n != wantQueries {
				t.Errorf("clean transaction read of a cached query made %d queries; want %d", n, wantQueries)
			}
		})
		t.Run("ForUpdateBypasses", func(t *testing.T) {
			locking := func(tx *gorm.DB) []invUser {
				var us []invUser
				dbtest.Must(t, tx.Scopes(dogpile.FromCache("default")).Clauses(clause.Locking{Strength: "UPDATE"}).
					Where("age > ?", -1000).Order("id").Find(&us).Error)
				return us
			}
			db.Pool.Reset()
			locking(db.DB)
			locking(db.DB)
			if n := db.Pool.Queries(); n != 2 {
				t.Errorf("two FOR UPDATE reads outside a transaction: %d queries; want 2", n)
			}
			dbtest.Must(t, db.Transaction(func(tx *gorm.DB) error {
				db.Pool.Reset()
				locking(tx)
				locking(tx)
				if n := db.Pool.Queries(); n != 2 {
					t.Errorf("two FOR UPDATE reads in a clean transaction: %d queries; want 2", n)
				}
				return nil
			}))
			// Nothing was stored by them (on SQLite the SQL is the same as the
			// non-locking query's: GORM drops FOR UPDATE there).
			db.Pool.Reset()
			var us []invUser
			dbtest.Must(t, invCached(db).Where("age > ?", -1000).Order("id").Find(&us).Error)
			if n := db.Pool.Queries(); n != 1 {
				t.Errorf("non-locking read after locking reads: %d queries; want 1 (a miss)", n)
			}
		})
		if db.Dialect == "postgres" { // row locks are PostgreSQL syntax
			t.Run("RawLockingClausesBypass", func(t *testing.T) {
				for _, lock := range []string{"FOR UPDATE", "FOR NO KEY UPDATE", "FOR SHARE", "FOR KEY SHARE"} {
					t.Run(strings.ReplaceAll(lock, " ", "_"), func(t *testing.T) {
						db.Pool.Reset()
						for range 2 {
							var us []invUser
							dbtest.Must(t, invCached(db).Raw("SELECT * FROM inv_users WHERE id = ? "+lock, a.ID).Find(&us).Error)
						}
						if n := db.Pool.Queries(); n != 2 {
							t.Errorf("Raw SELECT … %s through FromCache twice: %d queries; want 2 (locking reads bypass)", lock, n)
						}
					})
				}
			})
		}
	})
}

// TestInvCacheBeforeCommitRace ports cacheops #22 and identity_cache's
// test_cache_not_expired_until_after_transaction: while a transaction has
// written but not committed, another goroutine fills the cache from the
// committed (old) data; once Commit returns, that entry is not served.
func TestInvCacheBeforeCommitRace(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		invOpen(t, db)
		a, _ := invSeed(t, db, "race")
		q := func(t *testing.T, tx *gorm.DB) string { return invUsersQ(t, tx.Where("age < ?", 1000)) }
		old := q(t, db.DB)

		tx := db.Begin()
		dbtest.Must(t, tx.Error)
		defer tx.Rollback()
		dbtest.Must(t, tx.Model(&a).Update("name", "race-new").Error)

		db.Pool.Reset()
		filled := make(chan string, 1)
		go func() { filled <- q(t, invCached(db)) }()
		if got := invWait(t, filled, "the concurrent fill"); got != old {
			t.Fatalf("concurrent read during the transaction = %q; want the committed %q", got, old)
		}
		if n := db.Pool.Queries(); n != 1 {
			t.Fatalf("concurrent fill made %d queries; want 1", n)
		}
		invHit(t, db, q, old) // the filled entry is there

		dbtest.Must(t, tx.Commit().Error)
		if got, want := q(t, invCached(db)), q(t, db.DB); got != want || got == old {
			t.Fatalf("after Commit returned: cached %q, db %q, filled before commit %q", got, want, old)
		}
	})
}

// TestInvLease: a writer that dies between its commit and its second
// invalidation (PreInvalidateTags, then a commit through a raw connection,
// then nothing) leaves stale entries behind for at most the lease.
func TestInvLease(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		clock := regiontest.NewClock()
		r := invOpen(t, db, region.WithClock(clock.Now), region.WithInvalidationLease(5*time.Second))
		a, _ := invSeed(t, db, "lease")
		ctx := context.Background()
		before := invUsersQ(t, invCached(db))
		invHit(t, db, invUsersQ, before)

		dbtest.Must(t, r.PreInvalidateTags(ctx, "inv_users"))
		// Filled while the invalidation is pending: from the old data.
		db.Pool.Reset()
		if got := invUsersQ(t, invCached(db)); got != before || db.Pool.Queries() != 1 {
			t.Fatalf("read after PreInvalidateTags: %q (queries %d); want a miss answering %q", got, db.Pool.Queries(), before)
		}
		// The dying writer commits outside GORM and never invalidates again.
		_, err := db.Pool.DB.Exec(invBind(db, "UPDATE inv_users SET name = 'lease-new' WHERE id = ?"), a.ID)
		dbtest.Must(t, err)
		truth := invUsersQ(t, db.DB)
		if truth == before {
			t.Fatal("test bug: raw update changed nothing")
		}
		clock.Advance(4 * time.Second) // within the lease: stale is allowed
		_ = invUsersQ(t, invCached(db))

		clock.Advance(2 * time.Second) // past the lease
		db.Pool.Reset()
		got := invUsersQ(t, invCached(db))
		if got != truth {
			t.Fatalf("past the lease: cached %q; want %q", got, truth)
		}
		if n := db.Pool.Queries(); n != 1 {
			t.Fatalf("past the lease: %d queries; want 1 (a miss)", n)
		}
	})
}

// TestInvLeaseOnlyCoversCommitWindow: an entry filled after a write's
// second invalidation (Commit returned) is not in any commit window, so the
// lease must not bound it ("only the commit window is leased", txpool.go;
// "entries filled from now until the second phase live no longer than the
// invalidation lease", invalidate.go). The region never expires entries.
func TestInvLeaseOnlyCoversCommitWindow(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		clock := regiontest.NewClock()
		r := invOpen(t, db, region.WithClock(clock.Now), region.WithInvalidationLease(5*time.Second))
		a, _ := invSeed(t, db, "window")
		dbtest.Must(t, db.Model(&a).Update("age", 31).Error) // both phases done when it returns
		want := invUsersQ(t, invCached(db))                  // filled after the commit window
		invHit(t, db, invUsersQ, want)
		clock.Advance(6 * time.Second)
		db.Pool.Reset()
		got := invUsersQ(t, invCached(db))
		if n := db.Pool.Queries(); n != 0 {
			t.Errorf("an entry filled after Commit returned died with the lease: %d queries (stats %+v); want a hit", n, r.Stats())
		}
		if got != want {
			t.Errorf("got %q; want %q", got, want)
		}
	})
}

// TestInvConcurrentCommitsNeverStale is the randomized centerpiece: writers
// set a counter to strictly increasing values in transactions (some roll
// back) and publish each value whose Commit returned; readers snapshot the
// last published value before each cached read and must never read less.
// The region never expires entries: only invalidation keeps them fresh.
func TestInvConcurrentCommitsNeverStale(t *testing.T) {
	const writers, txPerWriter, readers, readsPerReader = 3, 30, 4, 60
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		invOpen(t, db)
		dbtest.Must(t, db.Create(&invCounter{ID: 1, Value: 0}).Error)
		var lastCommitted atomic.Int64
		publish := func(v int64) {
			for {
				cur := lastCommitted.Load()
				if v <= cur || lastCommitted.CompareAndSwap(cur, v) {
					return
				}
			}
		}
		var failures atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), 42))
				<-start
				for range txPerWriter {
					var v int64
					rollback := rng.IntN(4) == 0
					errRollback := errors.New("rollback")
					err := db.Transaction(func(tx *gorm.DB) error {
						// The row lock orders the increments: commits publish
						// strictly increasing values.
						var c invCounter
						res := tx.Model(&c).Clauses(clause.Returning{}).Where("id = ?", 1).
							Update("value", gorm.Expr("value + 1"))
						if res.Error != nil {
							return res.Error
						}
						v = c.Value
						if rollback {
							return errRollback
						}
						return nil
					})
					switch {
					case rollback && errors.Is(err, errRollback):
					case err != nil:
						t.Errorf("writer: %v", err)
						return
					default:
						if v == 0 {
							t.Errorf("writer: RETURNING gave no value")
							return
						}
						publish(v)
					}
				}
			}()
		}
		for range readers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for range readsPerReader {
					snap := lastCommitted.Load()
					var c invCounter
					if err := invCached(db).First(&c, 1).Error; err != nil {
						t.Errorf("reader: %v", err)
						return
					}
					if c.Value < snap {
						failures.Add(1)
						t.Errorf("reader saw %d after the commit of %d had returned", c.Value, snap)
					}
				}
			}()
		}
		close(start)
		wg.Wait()
		var final invCounter
		dbtest.Must(t, invCached(db).First(&final, 1).Error)
		if final.Value != lastCommitted.Load() {
			t.Errorf("final cached value %d; last committed %d", final.Value, lastCommitted.Load())
		}
		t.Logf("last committed %d, stale reads %d", lastCommitted.Load(), failures.Load())
	})
}
