package dogpile_test

import (
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/region"
)

type reviewNote struct {
	ID   uint
	Body string
}

func (reviewNote) TableName() string { return "review_notes" }

// Review finding: db.Connection(func(c) { c.Transaction(...) }) begins
// the transaction on the pinned *sql.Conn (GORM calls (*sql.Conn).BeginTx),
// past the plugin's pool: txOf sees a transaction it does not follow, and
// beginWrite invalidates around the statement instead of at the commit. A
// read on another connection between the write and the commit fills the
// cache from the data before the commit, and after the commit that entry
// is served: the committed write is never seen (until expiry).
func TestReviewConnectionTransactionStale(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		r := region.New(memory.New(), region.WithName("conntx-"+db.Dialect), region.WithExpiration(time.Hour))
		dbtest.Must(t, db.Use(dogpile.New(map[string]*region.Region{"default": r})))
		dbtest.Must(t, db.AutoMigrate(&reviewNote{}))
		dbtest.Must(t, db.Create(&reviewNote{ID: 1, Body: "old"}).Error)
		read := func() string {
			var n reviewNote
			dbtest.Must(t, db.Scopes(dogpile.FromCache("default")).First(&n, 1).Error)
			return n.Body
		}
		if got := read(); got != "old" {
			t.Fatalf("first read %q", got)
		}
		err := db.Connection(func(c *gorm.DB) error {
			return c.Transaction(func(tx *gorm.DB) error {
				if err := tx.Model(&reviewNote{}).Where("id = ?", 1).Update("body", "new").Error; err != nil {
					return err
				}
				// Another caller reads meanwhile (it sees the committed "old").
				if got := read(); got != "old" {
					t.Errorf("read during the transaction: %q; want the committed \"old\"", got)
				}
				return nil
			})
		})
		dbtest.Must(t, err)
		var plain reviewNote
		dbtest.Must(t, db.First(&plain, 1).Error)
		if plain.Body != "new" {
			t.Fatalf("database holds %q after the commit", plain.Body)
		}
		if got := read(); got != "new" {
			t.Errorf("cached read after the commit returned: %q; the database holds \"new\"", got)
		}
	})
}
