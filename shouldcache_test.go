package dogpile_test

import (
	"fmt"
	"testing"

	"gorm.io/gorm"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/region"
)

// ShouldCache: a FromCache option deciding from the answer whether to
// store it.

// KeptItem is queried with ShouldCache.
type KeptItem struct {
	ID   uint
	Kind string
}

// KeptDefault is cached by default, with ShouldCache(NonEmpty).
type KeptDefault struct {
	ID   uint
	Kind string
}

func (KeptDefault) CacheRegion() string { return "kept" }

func (KeptDefault) CacheOptions() []dogpile.Option {
	return []dogpile.Option{dogpile.ShouldCache(dogpile.NonEmpty)}
}

func shouldCacheSetup(t *testing.T, db *dbtest.DB) *region.Region {
	t.Helper()
	r := region.New(memory.New(), region.WithName("kept-"+db.Dialect))
	dbtest.Must(t, db.Use(dogpile.New(map[string]*region.Region{"kept": r})))
	dbtest.Must(t, db.AutoMigrate(&KeptItem{}, &KeptDefault{}))
	dbtest.Must(t, db.Create(&[]KeptItem{{Kind: "a"}, {Kind: "a"}, {Kind: "b"}}).Error)
	dbtest.Must(t, db.Create(&[]KeptDefault{{Kind: "a"}, {Kind: "a"}, {Kind: "b"}}).Error)
	return r
}

// Empty answers are not stored with ShouldCache(NonEmpty): every run
// reaches the database and counts one not stored by ShouldCache; others
// are cached as usual.
func TestShouldCacheNonEmpty(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		r := shouldCacheSetup(t, db)
		keep := dogpile.FromCache("kept", dogpile.ShouldCache(dogpile.NonEmpty))
		var items []KeptItem
		find := func(kind string) func() *gorm.DB {
			return func() *gorm.DB { items = nil; return db.Scopes(keep).Where("kind = ?", kind).Find(&items) }
		}
		s0 := r.Stats()
		expectRuns(t, db, "empty", find("z"), 1, dogpile.Miss, 1, dogpile.Miss, 1, dogpile.Miss)
		s1 := r.Stats()
		if got := s1.NotStoredBy.ShouldCache - s0.NotStoredBy.ShouldCache; got != 3 || s1.NotStored-s0.NotStored != 3 || s1.Hits != s0.Hits {
			t.Errorf("stats %+v → %+v; want 3 not stored by ShouldCache, no hits", s0, s1)
		}
		expectRuns(t, db, "non-empty", find("a"), 1, dogpile.Miss, 0, dogpile.Hit, 0, dogpile.Hit)
		if len(items) != 2 {
			t.Errorf("non-empty answer %+v; want 2 items", items)
		}
		s2 := r.Stats()
		if s2.NotStored != s1.NotStored || s2.Hits-s1.Hits != 2 {
			t.Errorf("stats %+v → %+v; want 2 hits, nothing more not stored", s1, s2)
		}
		// First that finds nothing: not stored, and still ErrRecordNotFound.
		for i := range 2 {
			db.Pool.Reset()
			var it KeptItem
			err := db.Scopes(keep).First(&it, 999).Error
			if err != gorm.ErrRecordNotFound || db.Pool.Queries() != 1 {
				t.Errorf("First not found #%d: %v, %d statements; want ErrRecordNotFound, 1", i, err, db.Pool.Queries())
			}
		}
		// A Count of zero is a row: cached.
		var n int64
		expectRuns(t, db, "count zero", func() *gorm.DB { n = 0; return db.Scopes(keep).Model(&KeptItem{}).Where("kind = ?", "z").Count(&n) },
			1, dogpile.Miss, 0, dogpile.Hit)
	})
}

// keep is given a pointer to the scanned destination and the rows; what
// it refuses is not stored, and the FromCache scope of the same region
// without ShouldCache (shared between calls) is not changed by it.
func TestShouldCacheDest(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		r := shouldCacheSetup(t, db)
		var seen []string
		onlyB := dogpile.ShouldCache(func(dest any, rows int64) bool {
			items := dest.(*[]KeptItem)
			seen = append(seen, fmt.Sprintf("%T rows=%d len=%d", dest, rows, len(*items)))
			for _, it := range *items {
				if it.Kind != "b" {
					return false
				}
			}
			return true
		})
		var items []KeptItem
		run := func(kind string) func() *gorm.DB {
			return func() *gorm.DB {
				items = nil
				return db.Scopes(dogpile.FromCache("kept", onlyB)).Where("kind = ?", kind).Find(&items)
			}
		}
		expectRuns(t, db, "refused", run("a"), 1, dogpile.Miss, 1, dogpile.Miss)
		expectRuns(t, db, "kept", run("b"), 1, dogpile.Miss, 0, dogpile.Hit)
		if want := "[*[]dogpile_test.KeptItem rows=2 len=2 *[]dogpile_test.KeptItem rows=2 len=2 *[]dogpile_test.KeptItem rows=1 len=1]"; fmt.Sprint(seen) != want {
			t.Errorf("keep saw %v; want %v", seen, want)
		}
		if len(items) != 1 || items[0].Kind != "b" {
			t.Errorf("answer %+v", items)
		}
		if got := r.Stats().NotStoredBy.ShouldCache; got != 2 {
			t.Errorf("NotStoredBy.ShouldCache %d; want 2", got)
		}
		// The plain scope of the region, shared, stores what onlyB refused.
		expectRuns(t, db, "without ShouldCache", func() *gorm.DB {
			items = nil
			return db.Scopes(dogpile.FromCache("kept")).Where("kind = ?", "a").Find(&items)
		},
			1, dogpile.Miss, 0, dogpile.Hit)
	})
}

// A model's CacheOptions carry ShouldCache to its default.
func TestShouldCacheDefault(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		r := shouldCacheSetup(t, db)
		var ks []KeptDefault
		expectRuns(t, db, "empty", func() *gorm.DB { ks = nil; return db.Where("kind = ?", "z").Find(&ks) }, 1, dogpile.Miss, 1, dogpile.Miss)
		expectRuns(t, db, "non-empty", func() *gorm.DB { ks = nil; return db.Where("kind = ?", "b").Find(&ks) }, 1, dogpile.Miss, 0, dogpile.Hit)
		if s := r.Stats(); s.NotStoredBy.ShouldCache != 2 || s.NotStored != 2 || s.Hits != 1 {
			t.Errorf("stats %+v; want 2 not stored by ShouldCache, 1 hit", s)
		}
	})
}

func ExampleShouldCache() {
	db, pool, done := openExampleDB()
	defer done()
	regions := map[string]*region.Region{"default": region.New(memory.New())}
	if err := db.Use(dogpile.New(regions)); err != nil {
		panic(err)
	}
	// Searches that find nothing are not cached: a book added later is
	// found at once.
	search := dogpile.FromCache("default", dogpile.ShouldCache(dogpile.NonEmpty))
	pool.Reset()
	for _, title := range []string{"Solaris", "Solaris", "Dune", "Dune"} {
		var books []ExampleBook
		tx := db.Scopes(search).Where("title = ?", title).Find(&books)
		fmt.Println(title, len(books), dogpile.OutcomeOf(tx), pool.Queries(), "queries so far")
	}
	fmt.Println(regions["default"].Stats().NotStoredBy.ShouldCache, "answers not stored")
	// Output:
	// Solaris 1 miss 1 queries so far
	// Solaris 1 hit 1 queries so far
	// Dune 0 miss 2 queries so far
	// Dune 0 miss 3 queries so far
	// 2 answers not stored
}
