package dogpile_test

import (
	"testing"
	"time"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/region"
)

// esAuthor and esBook: a has-many that RelationshipCache may preload.
type esAuthor struct {
	ID    uint
	Name  string
	Books []esBook `gorm:"foreignKey:AuthorID"`
}

// The belongs-to field declares the key, so entries per author can rely on
// row tags (README: a write invalidates only the parents it touched).
type esBook struct {
	ID        uint
	AuthorID  uint
	Author    *esAuthor
	Title     string
	UpdatedAt time.Time
}

// A write runs a query of its own (reading old key values back) only for a
// table whose RelationshipCache entries this plugin stamped with row tags;
// elsewhere an Update or a Delete sends no SELECT, and stays correct.
func TestWritesReadOldKeysOnlyForRowTaggedTables(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		r := region.New(memory.New(), region.WithName("es-"+db.Dialect))
		dbtest.Must(t, db.Use(dogpile.New(map[string]*region.Region{"default": r})))
		dbtest.Must(t, db.AutoMigrate(&esAuthor{}, &esBook{}))
		dbtest.Must(t, db.Create(&esAuthor{Name: "a", Books: []esBook{{Title: "one"}, {Title: "two"}}}).Error)
		var book esBook
		dbtest.Must(t, db.First(&book).Error)

		writes := func(what string, wantQueries int64) {
			t.Helper()
			db.Pool.Reset()
			dbtest.Must(t, db.Model(&book).Update("title", what).Error)
			dbtest.Must(t, db.Delete(&esBook{ID: 999}).Error)
			if q := db.Pool.Queries(); q != wantQueries {
				t.Errorf("%s: an Update and a Delete made %d queries; want %d", what, q, wantQueries)
			}
		}
		writes("no RelationshipCache yet", 0)

		// Preloaded through RelationshipCache: entries per author, stamped
		// with the books' row tags. Now writes read old author ids back.
		preload := func() []esBook {
			var as []esAuthor
			dbtest.Must(t, db.Scopes(dogpile.RelationshipCache("Books", "default")).Preload("Books").Find(&as).Error)
			return as[0].Books
		}
		_ = preload()
		writes("after RelationshipCache", 2)
		for _, b := range preload() {
			if b.ID == book.ID && b.Title != "after RelationshipCache" {
				t.Errorf("preloaded book %q after the update; want the new title", b.Title)
			}
		}
	})
}
