package dogpile_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/logger"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/region"
)

// The old key values a write must invalidate (relwrite.go), and how many
// statements reading them costs: none for a table no RelationshipCache
// entry depends on by row; none for key columns that are the primary key
// (the statement's WHERE has them); in the DELETE itself (RETURNING) in a
// transaction the plugin follows; otherwise one SELECT by primary key.

// RrAuthor has books and drafts (soft-deleted) that RelationshipCache
// preloads per author; the books' belongs-to declares the key, so entries
// depend on their own author's rows.
type RrAuthor struct {
	ID     uint
	Name   string
	Books  []RrBook  `gorm:"foreignKey:AuthorID"`
	Drafts []RrDraft `gorm:"foreignKey:AuthorID"`
}

type RrBook struct {
	ID       uint
	AuthorID uint
	Author   *RrAuthor
	Title    string
}

type RrDraft struct {
	ID        uint
	AuthorID  uint
	Author    *RrAuthor
	Title     string
	DeletedAt gorm.DeletedAt
}

type rrEnv struct {
	db     *dbtest.DB // db.DB has no plugin: what GORM answers
	cached *gorm.DB   // the plugin's, over the same counting pool
	ids    []uint     // the authors, in id order
}

// rrSetup seeds authors 1..4 (4 has no rows) with books and drafts and
// opens the plugin's *gorm.DB; the books and drafts are not yet row-tagged.
func rrSetup(t *testing.T, db *dbtest.DB) *rrEnv {
	t.Helper()
	dbtest.Must(t, db.AutoMigrate(&RrAuthor{}, &RrBook{}, &RrDraft{}))
	e := &rrEnv{db: db}
	for i, name := range []string{"a", "b", "c", "d"} {
		a := RrAuthor{Name: name}
		for j := 0; j < 3-i; j++ {
			a.Books = append(a.Books, RrBook{Title: name + "-book"})
			a.Drafts = append(a.Drafts, RrDraft{Title: name + "-draft"})
		}
		dbtest.Must(t, db.Create(&a).Error)
		e.ids = append(e.ids, a.ID)
	}
	cfg := &gorm.Config{Logger: logger.Discard}
	var err error
	if db.Dialect == "sqlite" {
		e.cached, err = gorm.Open(sqlite.New(sqlite.Config{Conn: db.Pool}), cfg)
	} else {
		e.cached, err = gorm.Open(postgres.New(postgres.Config{Conn: db.Pool}), cfg)
	}
	dbtest.Must(t, err)
	r := region.New(memory.New(), region.WithExpiration(time.Minute), region.WithName("rr-"+db.Dialect))
	dbtest.Must(t, e.cached.Use(dogpile.New(map[string]*region.Region{"default": r})))
	return e
}

func rrByID(db *gorm.DB) *gorm.DB { return db.Order("id") }

// authors loads the authors with ids and the association at path, through
// RelationshipCache when cached.
func (e *rrEnv) authors(t *testing.T, cached bool, path string, ids ...uint) []RrAuthor {
	t.Helper()
	tx := e.db.DB
	if cached {
		tx = e.cached.Scopes(dogpile.RelationshipCache(path, "default"))
	}
	if len(ids) == 0 {
		ids = e.ids
	}
	var as []RrAuthor
	dbtest.Must(t, tx.Preload(path, rrByID).Where("id IN ?", ids).Order("id").Find(&as).Error)
	return as
}

// same fails unless every author's cached association at path is what
// GORM answers.
func (e *rrEnv) same(t *testing.T, what, path string) {
	t.Helper()
	if want, got := e.authors(t, false, path), e.authors(t, true, path); !reflect.DeepEqual(want, got) {
		t.Errorf("%s: cached %s differ from GORM's:\n got %+v\nwant %+v", what, path, got, want)
	}
}

// book returns the first book of the author with id, read without the
// plugin.
func (e *rrEnv) book(t *testing.T, author uint) RrBook {
	t.Helper()
	var b RrBook
	dbtest.Must(t, e.db.DB.Where("author_id = ?", author).Order("id").First(&b).Error)
	return b
}

// statements runs write and returns the queries and execs it sent.
func (e *rrEnv) statements(t *testing.T, write func() *gorm.DB) (queries, execs int64) {
	t.Helper()
	e.db.Pool.Reset()
	dbtest.Must(t, write().Error)
	return e.db.Pool.Queries(), e.db.Pool.Execs()
}

func (e *rrEnv) wantStatements(t *testing.T, what string, want int64, write func() *gorm.DB) {
	t.Helper()
	if q, x := e.statements(t, write); q+x != want {
		t.Errorf("%s: %d queries and %d execs; want %d statements", what, q, x, want)
	}
}

// TestRelwriteDeleteReturning: a Delete on a row-tagged table, in GORM's
// transaction or the caller's, reads its rows' old author ids in the
// DELETE itself (RETURNING): one statement, and every affected author's
// cached books are right afterwards, the others still cached, even when
// the model's author id is stale. Without RETURNING (outside a
// transaction, or a RETURNING of the caller's) the SELECT stays.
func TestRelwriteDeleteReturning(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		e := rrSetup(t, db)
		a, b, c := e.ids[0], e.ids[1], e.ids[2]

		// Not row-tagged yet: the DELETE only.
		gone := e.book(t, c)
		if q, x := e.statements(t, func() *gorm.DB { return e.cached.Delete(&gone) }); q != 0 || x != 1 {
			t.Errorf("not row-tagged: %d queries and %d execs; want the DELETE only (0 and 1)", q, x)
		}

		e.same(t, "first load", "Books") // now row-tagged
		del := e.book(t, a)
		before := del
		var res *gorm.DB
		if q, x := e.statements(t, func() *gorm.DB { res = e.cached.Delete(&del); return res }); q != 1 || x != 0 {
			t.Errorf("row-tagged: %d queries and %d execs; want one DELETE … RETURNING (1 and 0)", q, x)
		}
		if res.RowsAffected != 1 || res.Statement.Dest != &del || del != before {
			t.Errorf("Delete(&book): RowsAffected %d, Dest %T, model %+v; want 1, the model, unchanged %+v", res.RowsAffected, res.Statement.Dest, del, before)
		}
		e.same(t, "delete", "Books")
		e.wantStatements(t, "an untouched author is still cached", 1, func() *gorm.DB {
			return e.cached.Scopes(dogpile.RelationshipCache("Books", "default")).Preload("Books", rrByID).Where("id = ?", b).Find(&[]RrAuthor{})
		})

		// Another writer moved the book from b to c through the plugin; c's
		// entry, filled since, lists it. The stale model still says b.
		stale := e.book(t, b)
		dbtest.Must(t, e.cached.Model(&RrBook{ID: stale.ID}).Update("author_id", c).Error)
		e.same(t, "moved to c", "Books")
		e.wantStatements(t, "stale model", 1, func() *gorm.DB { return e.cached.Delete(&stale) })
		e.same(t, "delete with a stale author id", "Books")

		// Moved behind the plugin's back (not invalidated: a's entry still
		// lists it): the delete invalidates the model's author and the
		// database's.
		behind := e.book(t, a)
		dbtest.Must(t, e.db.DB.Exec("UPDATE rr_books SET author_id = ? WHERE id = ?", c, behind.ID).Error)
		e.wantStatements(t, "moved behind the plugin's back", 1, func() *gorm.DB { return e.cached.Delete(&behind) })
		e.same(t, "delete after a move behind the plugin's back", "Books")

		// Several rows, of several authors; and a row that is not there.
		dbtest.Must(t, e.cached.Create(&[]RrBook{{AuthorID: a, Title: "new-a"}, {AuthorID: b, Title: "new-b"}}).Error)
		e.same(t, "created", "Books")
		two := []RrBook{e.book(t, a), e.book(t, b)}
		if q, x := e.statements(t, func() *gorm.DB { res = e.cached.Delete(&two); return res }); q+x != 1 || res.RowsAffected != 2 {
			t.Errorf("Delete(&two books): %d queries, %d execs, RowsAffected %d; want 1 statement, 2", q, x, res.RowsAffected)
		}
		e.same(t, "delete of two", "Books")
		if q, x := e.statements(t, func() *gorm.DB { res = e.cached.Delete(&RrBook{ID: 99999}); return res }); q+x != 1 || res.RowsAffected != 0 {
			t.Errorf("Delete of a missing row: %d queries, %d execs, RowsAffected %d; want 1 statement, 0", q, x, res.RowsAffected)
		}

		// In the caller's transaction; rolled back; outside any.
		dbtest.Must(t, e.cached.Create(&[]RrBook{{AuthorID: a, Title: "tx-a"}, {AuthorID: c, Title: "tx-c"}}).Error)
		e.same(t, "created again", "Books")
		inTx := e.book(t, a)
		e.db.Pool.Reset()
		dbtest.Must(t, e.cached.Transaction(func(tx *gorm.DB) error { return tx.Delete(&inTx).Error }))
		if n := e.db.Pool.Queries() + e.db.Pool.Execs(); n != 1 {
			t.Errorf("Delete in a transaction: %d statements; want 1", n)
		}
		e.same(t, "delete in a transaction", "Books")
		undone := e.book(t, c)
		errUndo := errors.New("undo")
		if err := e.cached.Transaction(func(tx *gorm.DB) error {
			dbtest.Must(t, tx.Delete(&undone).Error)
			return errUndo
		}); !errors.Is(err, errUndo) {
			t.Fatalf("rolled back transaction: %v", err)
		}
		e.same(t, "delete rolled back", "Books")
		outside := e.book(t, c)
		e.wantStatements(t, "outside a transaction: SELECT and DELETE", 2, func() *gorm.DB {
			return e.cached.Session(&gorm.Session{SkipDefaultTransaction: true}).Delete(&outside)
		})
		e.same(t, "delete outside a transaction", "Books")

		// The caller's RETURNING is GORM's: scanned into the model.
		own := e.book(t, b)
		id := own.ID
		own.Title = ""
		e.wantStatements(t, "the caller's RETURNING: SELECT and DELETE", 2, func() *gorm.DB {
			return e.cached.Clauses(clause.Returning{}).Delete(&own)
		})
		if own.ID != id || own.Title == "" {
			t.Errorf("Delete with the caller's RETURNING: model %+v; want the deleted row", own)
		}
		e.same(t, "delete with the caller's RETURNING", "Books")
	})
}

// TestRelwriteSoftDeleteReturning: a soft delete is an UPDATE that sets the
// model's DeletedAt; its RETURNING reads the old author ids the same way.
func TestRelwriteSoftDeleteReturning(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		e := rrSetup(t, db)
		e.same(t, "first load", "Drafts")
		var d RrDraft
		dbtest.Must(t, e.db.DB.Where("author_id = ?", e.ids[0]).Order("id").First(&d).Error)
		var res *gorm.DB
		if q, x := e.statements(t, func() *gorm.DB { res = e.cached.Delete(&d); return res }); q+x != 1 {
			t.Errorf("soft delete: %d queries and %d execs; want 1 statement", q, x)
		}
		if res.RowsAffected != 1 || !d.DeletedAt.Valid || res.Statement.Dest != &d {
			t.Errorf("soft delete: RowsAffected %d, DeletedAt %+v, Dest %T; want 1, set, the model", res.RowsAffected, d.DeletedAt, res.Statement.Dest)
		}
		e.same(t, "soft delete", "Drafts")
		var hard RrDraft
		dbtest.Must(t, e.db.DB.Where("author_id = ?", e.ids[1]).Order("id").First(&hard).Error)
		e.wantStatements(t, "hard delete", 1, func() *gorm.DB { return e.cached.Unscoped().Delete(&hard) })
		e.same(t, "hard delete", "Drafts")
	})
}

// TestRelwriteUpdateRoundTrips: an Update reads nothing for a table that
// is not row-tagged, nor for one whose key columns are its primary key
// (the WHERE has the old values: the authors, loaded as the books' belongs-to
// target). The books' author id comes from the database, by one SELECT (an
// UPDATE's RETURNING cannot carry it through GORM): the cached books of
// both authors of a moved book are right, even with a stale model.
func TestRelwriteUpdateRoundTrips(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		e := rrSetup(t, db)
		a, b, c, d := e.ids[0], e.ids[1], e.ids[2], e.ids[3]
		booksWithAuthor := func(cached bool) []RrBook {
			tx := e.db.DB
			if cached {
				tx = e.cached.Scopes(dogpile.RelationshipCache("Author", "default"))
			}
			var bs []RrBook
			dbtest.Must(t, tx.Preload("Author").Order("id").Find(&bs).Error)
			return bs
		}
		sameBooks := func(what string) {
			t.Helper()
			if want, got := booksWithAuthor(false), booksWithAuthor(true); !reflect.DeepEqual(want, got) {
				t.Errorf("%s: cached authors of books differ from GORM's:\n got %+v\nwant %+v", what, got, want)
			}
		}

		// Not row-tagged: the UPDATE only.
		e.wantStatements(t, "author, not row-tagged", 1, func() *gorm.DB { return e.cached.Model(&RrAuthor{ID: a}).Update("name", "a1") })
		first := e.book(t, a)
		e.wantStatements(t, "book, not row-tagged", 1, func() *gorm.DB { return e.cached.Model(&first).Update("title", "t1") })

		// The authors are row-tagged by id, their only key column.
		sameBooks("first load")
		e.wantStatements(t, "author by primary key", 1, func() *gorm.DB { return e.cached.Model(&RrAuthor{ID: a}).Update("name", "a2") })
		sameBooks("author renamed")
		e.wantStatements(t, "author saved", 1, func() *gorm.DB { return e.cached.Save(&RrAuthor{ID: b, Name: "b2"}) })
		sameBooks("author saved")
		e.wantStatements(t, "author deleted", 1, func() *gorm.DB { return e.cached.Delete(&RrAuthor{ID: d}) })
		e.wantStatements(t, "author deleted outside a transaction", 1, func() *gorm.DB {
			return e.cached.Session(&gorm.Session{SkipDefaultTransaction: true}).Delete(&RrAuthor{ID: d})
		})
		sameBooks("author deleted")

		// The books are row-tagged by author id: one SELECT reads it.
		e.same(t, "first load", "Books")
		moved := e.book(t, a)
		e.wantStatements(t, "book moved a→b", 2, func() *gorm.DB { return e.cached.Model(&moved).Update("author_id", b) })
		e.same(t, "book moved a→b", "Books")

		// Another writer moved a book from b to c through the plugin; the
		// stale model still says b.
		stale := e.book(t, b)
		dbtest.Must(t, e.cached.Model(&RrBook{ID: stale.ID}).Update("author_id", c).Error)
		e.same(t, "moved to c", "Books")
		e.wantStatements(t, "stale model renamed", 2, func() *gorm.DB { return e.cached.Model(&stale).Update("title", "renamed") })
		e.same(t, "stale model renamed", "Books")
		e.wantStatements(t, "stale model moved to a", 2, func() *gorm.DB { return e.cached.Model(&stale).Update("author_id", a) })
		e.same(t, "stale model moved to a", "Books")
		stale.Title, stale.AuthorID = "saved", b // c's entry lists it no more; b's will
		dbtest.Must(t, e.cached.Model(&RrBook{ID: stale.ID}).Update("author_id", c).Error)
		e.same(t, "moved to c again", "Books")
		e.wantStatements(t, "stale model saved to b", 2, func() *gorm.DB { return e.cached.Save(&stale) })
		e.same(t, "stale model saved to b", "Books")
	})
}
