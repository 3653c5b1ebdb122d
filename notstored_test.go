package dogpile_test

import (
	"database/sql/driver"
	"testing"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/region"
)

// scanOnly is a column type whose Value is itself (it is never sent here):
// GORM puts that in map rows, a value the cache cannot restore.
type scanOnly struct{ s string }

func (v scanOnly) Value() (driver.Value, error) { return v, nil }

func (v *scanOnly) Scan(src any) error {
	switch x := src.(type) {
	case string:
		v.s = x
	case []byte:
		v.s = string(x)
	}
	return nil
}

// notStoredItem is read from a table made by hand.
type notStoredItem struct {
	ID    uint
	Label scanOnly
}

// An answer the plugin does not store is counted under its reason in the
// region's Stats: a scan that failed as partial, a map row holding a value
// the cache cannot restore as unencodable. Every read then reaches the
// database. (The other reasons are the region's own: see region's
// TestNotStoredByReason.)
func TestNotStoredReasons(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		r := region.New(memory.New(), region.WithName("ns-"+db.Dialect))
		dbtest.Must(t, db.Use(dogpile.New(map[string]*region.Region{"default": r})))
		dbtest.Must(t, db.Exec("CREATE TABLE not_stored_items (id integer PRIMARY KEY, label text)").Error)
		dbtest.Must(t, db.Exec("INSERT INTO not_stored_items (id, label) VALUES (1, 'a'), (2, 'b')").Error)
		cached := func() *dbtest.DB { return db }

		for _, c := range []struct {
			name string
			run  func() error
			want func(region.NotStoredCounts) int64
		}{
			{"partial", func() error {
				var out []struct{ Age int }
				return cached().Scopes(dogpile.FromCache("default")).Raw("SELECT 'abc' AS age").Find(&out).Error
			}, func(c region.NotStoredCounts) int64 { return c.Partial }},
			{"unencodable", func() error {
				var out []map[string]any
				return cached().Scopes(dogpile.FromCache("default")).Model(&notStoredItem{}).Order("id").Find(&out).Error
			}, func(c region.NotStoredCounts) int64 { return c.Unencodable }},
		} {
			t.Run(c.name, func(t *testing.T) {
				before := r.Stats()
				db.Pool.Reset()
				for i := range 3 {
					err := c.run()
					if c.name == "partial" && err == nil {
						t.Fatalf("run %d: the scan did not fail", i+1)
					} else if c.name != "partial" && err != nil {
						t.Fatalf("run %d: %v", i+1, err)
					}
				}
				s := r.Stats()
				if got := c.want(s.NotStoredBy) - c.want(before.NotStoredBy); got != 3 || s.NotStored-before.NotStored != 3 {
					t.Errorf("stats %+v (before %+v); want 3 more not stored as %s", s, before, c.name)
				}
				if q := db.Pool.Queries(); q != 3 || s.Hits != before.Hits {
					t.Errorf("%d queries, %d hits; want every read at the database", q, s.Hits-before.Hits)
				}
			})
		}
	})
}
