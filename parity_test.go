package dogpile_test

// The parity matrix: a FromCache query must be indistinguishable from the
// same query without it. Every case runs one query into a fresh destination
// four times on each dialect:
//
//   - bare:  on a *gorm.DB over the same pool without the plugin at all;
//   - plain: on the plugin's *gorm.DB, without FromCache;
//   - miss:  with FromCache, on an empty region (one of its own per case);
//   - hit:   with FromCache again, answered from the region.
//
// and compares the destination (reflect.DeepEqual, value by value, time
// locations and nil-versus-empty slices included), RowsAffected, the error
// and the number of AfterFind calls, and counts the statements that reached
// the database.
//
// The cases of parity_types_test.go (column types the codec cannot carry,
// time zones, scans that fail) run in the same matrix; its zone cases also
// run on databases whose driver is set to return other zones.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"runtime/debug"
	"sort"
	"strings"
	"sync/atomic"
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

// ---------------------------------------------------------------------------
// Models and data

type ParityCompany struct {
	ID      uint
	Name    string
	Country *string
}

type ParityPost struct {
	ID           uint
	ParityUserID uint
	Title        string
	Views        int
}

type ParityUser struct {
	ID        uint
	Name      string
	Age       int
	Score     float64
	Active    bool
	Rank      int64
	Small     int16
	Nickname  *string
	Avatar    []byte
	CompanyID *uint
	Company   *ParityCompany
	Posts     []ParityPost
	CreatedAt time.Time
	UpdatedAt time.Time
	DeletedAt gorm.DeletedAt `gorm:"index"`

	Loaded string `gorm:"-"` // set by AfterFind, so its effect on Dest shows
}

// parityAfterFind counts AfterFind calls on ParityUser.
var parityAfterFind atomic.Int64

func (u *ParityUser) AfterFind(*gorm.DB) error {
	parityAfterFind.Add(1)
	u.Loaded = "loaded:" + u.Name
	return nil
}

// parityAgeGroup is the destination of the Group/Having case.
type parityAgeGroup struct {
	Age   int
	N     int64
	Total float64
}

const parityUsers = 36

// Seeded data, 1 ≤ i ≤ 36:
//
//	name user%02d, age 20+i%7, score i*1.25, active unless i%3 == 0,
//	nickname NULL when i%4 == 0, avatar NULL when i%5 == 0 and empty when
//	i%5 == 1, no company when i%6 == 0, soft-deleted when i%9 == 0,
//	i%3 posts.
func paritySeed(t *testing.T, db *gorm.DB) {
	t.Helper()
	dbtest.Must(t, db.AutoMigrate(&ParityCompany{}, &ParityUser{}, &ParityPost{}))
	fr := "fr"
	companies := []ParityCompany{{Name: "acme", Country: &fr}, {Name: "globex"}, {Name: "initech", Country: &fr}}
	dbtest.Must(t, db.Create(&companies).Error)
	users := make([]ParityUser, 0, parityUsers)
	for i := 1; i <= parityUsers; i++ {
		u := ParityUser{
			Name:      fmt.Sprintf("user%02d", i),
			Age:       20 + i%7,
			Score:     float64(i) * 1.25,
			Active:    i%3 != 0,
			Rank:      int64(i) * 1_000_000_007,
			Small:     int16(-i),
			CreatedAt: time.Date(2024, 1, i%28+1, 10, i, 7, i*1000, time.UTC),
			UpdatedAt: time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC),
		}
		if i%4 != 0 {
			n := fmt.Sprintf("nick%d", i)
			u.Nickname = &n
		}
		switch i % 5 {
		case 0:
		case 1:
			u.Avatar = []byte{}
		default:
			u.Avatar = []byte{byte(i), 0, 255}
		}
		if i%6 != 0 {
			id := companies[i%3].ID
			u.CompanyID = &id
		}
		if i%9 == 0 {
			u.DeletedAt = gorm.DeletedAt{Time: time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC), Valid: true}
		}
		users = append(users, u)
	}
	dbtest.Must(t, db.Create(&users).Error)
	var posts []ParityPost
	for _, u := range users {
		for j := 0; j < int(u.ID)%3; j++ {
			posts = append(posts, ParityPost{ParityUserID: u.ID, Title: fmt.Sprintf("%s-post%d", u.Name, j), Views: int(u.ID) * (j + 1)})
		}
	}
	dbtest.Must(t, db.Create(&posts).Error)
}

// paritySetup registers the plugin with one fresh region per name, seeds the
// data, and returns the regions and a *gorm.DB over the same pool without the
// plugin.
func paritySetup(t *testing.T, db *dbtest.DB, names ...string) (map[string]*region.Region, *gorm.DB) {
	t.Helper()
	return paritySetupWith(t, db, paritySeed, names...)
}

// paritySetupWith is paritySetup with the data that seed makes.
func paritySetupWith(t *testing.T, db *dbtest.DB, seed func(*testing.T, *gorm.DB), names ...string) (map[string]*region.Region, *gorm.DB) {
	t.Helper()
	regions := make(map[string]*region.Region, len(names))
	for _, n := range names {
		if regions[n] != nil {
			t.Fatalf("duplicate region %q", n)
		}
		regions[n] = region.New(memory.New(), region.WithExpiration(time.Minute), region.WithName(n))
	}
	var bare *gorm.DB
	var err error
	cfg := &gorm.Config{Logger: logger.Discard}
	var conn gorm.ConnPool = db.Pool
	switch db.Dialect {
	case "sqlite":
		bare, err = gorm.Open(sqlite.New(sqlite.Config{Conn: conn}), cfg)
	case "postgres":
		bare, err = gorm.Open(postgres.New(postgres.Config{Conn: conn}), cfg)
	default:
		t.Fatalf("dialect %q", db.Dialect)
	}
	dbtest.Must(t, err)
	dbtest.Must(t, db.Use(dogpile.New(regions)))
	seed(t, db.DB)
	db.Pool.Reset()
	return regions, bare
}

// fromCache is the FromCache scope of a case: its own region.
func fromCache(name string) func(*gorm.DB) *gorm.DB { return dogpile.FromCache(name) }

// ---------------------------------------------------------------------------
// Cases

type parityCase struct {
	name string
	// run runs one query into a fresh destination and returns the
	// destination's value (not a pointer to it).
	run      func(tx *gorm.DB) (dest any, rowsAffected int64, err error)
	notFound bool  // the query must fail with ErrRecordNotFound
	queries  int64 // statements per run without the cache and on a miss (0: 1)
	hitQ     int64 // statements on a hit (preloads)
	// bypass marks a query the plugin sends to the database on purpose (a
	// destination that already holds values): every run reaches the
	// database and the region is never used, and the answer still matches.
	bypass bool
	// scanErr marks a query that fails while GORM scans its rows: the plain
	// query returns an error other than ErrRecordNotFound, with the rows it
	// scanned, and every run must give exactly that (rows, RowsAffected and
	// the error, message and wrapping). Nothing is stored: every run, hits
	// included, reaches the database (queries statements), each one adds
	// one to the region's NotStored, and the region has no hits.
	scanErr bool
	// raw marks raw SQL (Raw(…).Find), which cache by default does not
	// apply to: its default runs all reach the database, not cached.
	raw bool
	// check sanity-checks the plain answer, so that a case tests what it
	// says it tests.
	check func(t *testing.T, dest any, rows int64)
}

func byID(db *gorm.DB) *gorm.DB { return db.Order("id") }

func parityAdults(db *gorm.DB) *gorm.DB { return db.Where("age >= ?", 23) }

func parityActive(db *gorm.DB) *gorm.DB { return db.Where("active = ?", true) }

func wantRows(n int64) func(*testing.T, any, int64) {
	return func(t *testing.T, _ any, rows int64) {
		t.Helper()
		if rows != n {
			t.Errorf("sanity: plain RowsAffected %d; want %d", rows, n)
		}
	}
}

// userCases are the cases run both on ParityUser (parityCases) and on its
// opted-in twin ParityCachedUser (parityModelCases): the same queries of a
// users model U.
func userCases[U any]() []parityCase {
	return []parityCase{
		{name: "First/found", run: func(tx *gorm.DB) (any, int64, error) {
			var u U
			r := tx.First(&u, 5)
			return u, r.RowsAffected, r.Error
		}, check: wantRows(1)},
		{name: "First/not-found", notFound: true, run: func(tx *gorm.DB) (any, int64, error) {
			var u U
			r := tx.First(&u, 9999)
			return u, r.RowsAffected, r.Error
		}},
		{name: "First/soft-deleted", notFound: true, run: func(tx *gorm.DB) (any, int64, error) {
			var u U
			r := tx.First(&u, 9)
			return u, r.RowsAffected, r.Error
		}},
		{name: "Find/slice", run: func(tx *gorm.DB) (any, int64, error) {
			var us []U
			r := tx.Where("age = ?", 22).Order("id").Find(&us)
			return us, r.RowsAffected, r.Error
		}},
		{name: "Find/slice-empty", run: func(tx *gorm.DB) (any, int64, error) {
			var us []U
			r := tx.Where("age > ?", 100).Find(&us)
			return us, r.RowsAffected, r.Error
		}, check: wantRows(0)},
		{name: "Find/map-model", run: func(tx *gorm.DB) (any, int64, error) {
			var m map[string]any
			r := tx.Model(new(U)).Where("id = ?", 2).Find(&m)
			return m, r.RowsAffected, r.Error
		}, check: wantRows(1)},
		{name: "Count/where", run: func(tx *gorm.DB) (any, int64, error) {
			var n int64
			r := tx.Model(new(U)).Where("age > ?", 22).Count(&n)
			return n, r.RowsAffected, r.Error
		}},
		{name: "Pluck/strings", run: func(tx *gorm.DB) (any, int64, error) {
			var names []string
			r := tx.Model(new(U)).Where("age = ?", 21).Order("id").Pluck("name", &names)
			return names, r.RowsAffected, r.Error
		}},
	}
}

func parityCases() []parityCase {
	return append(userCases[ParityUser](), []parityCase{
		// First / Take / Last
		{name: "First/unscoped-soft-deleted", run: func(tx *gorm.DB) (any, int64, error) {
			var u ParityUser
			r := tx.Unscoped().First(&u, 9)
			return u, r.RowsAffected, r.Error
		}, check: func(t *testing.T, dest any, _ int64) {
			if u := dest.(ParityUser); !u.DeletedAt.Valid {
				t.Errorf("sanity: user 9 not soft-deleted: %+v", u)
			}
		}},
		{name: "First/map-found", run: func(tx *gorm.DB) (any, int64, error) {
			var m map[string]any
			r := tx.Model(&ParityUser{}).First(&m, 5)
			return m, r.RowsAffected, r.Error
		}, check: wantRows(1)},
		{name: "First/map-not-found", notFound: true, run: func(tx *gorm.DB) (any, int64, error) {
			var m map[string]any
			r := tx.Model(&ParityUser{}).First(&m, 9999)
			return m, r.RowsAffected, r.Error
		}},
		{name: "Take/found", run: func(tx *gorm.DB) (any, int64, error) {
			var u ParityUser
			r := tx.Where("name = ?", "user07").Take(&u)
			return u, r.RowsAffected, r.Error
		}, check: wantRows(1)},
		{name: "Take/not-found", notFound: true, run: func(tx *gorm.DB) (any, int64, error) {
			var u ParityUser
			r := tx.Where("name = ?", "nobody").Take(&u)
			return u, r.RowsAffected, r.Error
		}},
		{name: "Last/found", run: func(tx *gorm.DB) (any, int64, error) {
			var u ParityUser
			r := tx.Where("age = ?", 23).Last(&u)
			return u, r.RowsAffected, r.Error
		}, check: wantRows(1)},
		{name: "Last/not-found", notFound: true, run: func(tx *gorm.DB) (any, int64, error) {
			var u ParityUser
			r := tx.Where("age = ?", 99).Last(&u)
			return u, r.RowsAffected, r.Error
		}},

		// Find
		{name: "Find/struct", run: func(tx *gorm.DB) (any, int64, error) {
			var u ParityUser
			r := tx.Where("id = ?", 4).Find(&u)
			return u, r.RowsAffected, r.Error
		}, check: wantRows(1)},
		{name: "Find/struct-empty", run: func(tx *gorm.DB) (any, int64, error) {
			var u ParityUser
			r := tx.Where("id = ?", 9999).Find(&u)
			return u, r.RowsAffected, r.Error
		}, check: wantRows(0)},
		{name: "Find/slice-all-rows", run: func(tx *gorm.DB) (any, int64, error) {
			var us []ParityUser
			r := tx.Order("id").Find(&us)
			return us, r.RowsAffected, r.Error
		}, check: wantRows(parityUsers - parityUsers/9)},
		{name: "Find/slice-of-pointers", run: func(tx *gorm.DB) (any, int64, error) {
			var us []*ParityUser
			r := tx.Where("age = ?", 24).Order("id").Find(&us)
			return us, r.RowsAffected, r.Error
		}},
		{name: "Find/map-model-non-null-columns", run: func(tx *gorm.DB) (any, int64, error) {
			var m map[string]any
			r := tx.Model(&ParityUser{}).Select("id", "name", "age", "score", "active", "created_at").Where("id = ?", 2).Find(&m)
			return m, r.RowsAffected, r.Error
		}, check: wantRows(1)},
		{name: "Find/map-table", run: func(tx *gorm.DB) (any, int64, error) {
			var m map[string]any
			r := tx.Table("parity_users").Where("id = ?", 3).Find(&m)
			return m, r.RowsAffected, r.Error
		}, check: wantRows(1)},
		{name: "Find/map-not-found", run: func(tx *gorm.DB) (any, int64, error) {
			var m map[string]any
			r := tx.Model(&ParityUser{}).Where("id = ?", 9999).Find(&m)
			return m, r.RowsAffected, r.Error
		}, check: wantRows(0)},
		{name: "Find/map-non-pointer", run: func(tx *gorm.DB) (any, int64, error) {
			m := map[string]any{}
			r := tx.Model(&ParityUser{}).Where("id = ?", 2).Find(m)
			return m, r.RowsAffected, r.Error
		}, check: wantRows(1)},
		{name: "Find/maps-model", run: func(tx *gorm.DB) (any, int64, error) {
			var ms []map[string]any
			r := tx.Model(&ParityUser{}).Where("age = ?", 25).Order("id").Find(&ms)
			return ms, r.RowsAffected, r.Error
		}},
		{name: "Find/maps-table", run: func(tx *gorm.DB) (any, int64, error) {
			var ms []map[string]any
			r := tx.Table("parity_users").Where("age = ?", 25).Order("id").Find(&ms)
			return ms, r.RowsAffected, r.Error
		}},
		{name: "Find/maps-empty", run: func(tx *gorm.DB) (any, int64, error) {
			var ms []map[string]any
			r := tx.Table("parity_users").Where("age > ?", 100).Find(&ms)
			return ms, r.RowsAffected, r.Error
		}, check: wantRows(0)},
		{name: "Find/scalar-slice-select", run: func(tx *gorm.DB) (any, int64, error) {
			var names []string
			r := tx.Model(&ParityUser{}).Select("name").Where("age = ?", 21).Order("id").Find(&names)
			return names, r.RowsAffected, r.Error
		}},

		// Pluck
		{name: "Pluck/nullable", run: func(tx *gorm.DB) (any, int64, error) {
			// GORM itself cannot Pluck NULL into []*string.
			var nicks []sql.NullString
			r := tx.Model(&ParityUser{}).Order("id").Pluck("nickname", &nicks)
			return nicks, r.RowsAffected, r.Error
		}},
		{name: "Pluck/times", run: func(tx *gorm.DB) (any, int64, error) {
			var ts []time.Time
			r := tx.Model(&ParityUser{}).Order("id").Pluck("created_at", &ts)
			return ts, r.RowsAffected, r.Error
		}},
		{name: "Pluck/bytes", run: func(tx *gorm.DB) (any, int64, error) {
			var bs [][]byte
			r := tx.Model(&ParityUser{}).Order("id").Pluck("avatar", &bs)
			return bs, r.RowsAffected, r.Error
		}},
		{name: "Pluck/empty", run: func(tx *gorm.DB) (any, int64, error) {
			var names []string
			r := tx.Model(&ParityUser{}).Where("age > ?", 100).Pluck("name", &names)
			return names, r.RowsAffected, r.Error
		}, check: wantRows(0)},

		// Count
		{name: "Count/zero", run: func(tx *gorm.DB) (any, int64, error) {
			var n int64
			r := tx.Model(&ParityUser{}).Where("age > ?", 100).Count(&n)
			return n, r.RowsAffected, r.Error
		}},
		{name: "Count/group", run: func(tx *gorm.DB) (any, int64, error) {
			var n int64
			r := tx.Model(&ParityUser{}).Group("age").Count(&n)
			return n, r.RowsAffected, r.Error
		}, check: func(t *testing.T, dest any, rows int64) {
			if dest.(int64) != 7 || rows != 7 {
				t.Errorf("sanity: Count with Group gave %v (rows %d); want 7 groups", dest, rows)
			}
		}},

		// FirstOrInit
		{name: "FirstOrInit/missing", run: func(tx *gorm.DB) (any, int64, error) {
			var u ParityUser
			r := tx.Where(ParityUser{Name: "nobody"}).Attrs(ParityUser{Age: 99}).FirstOrInit(&u)
			return u, r.RowsAffected, r.Error
		}, check: func(t *testing.T, dest any, _ int64) {
			if u := dest.(ParityUser); u.Name != "nobody" || u.Age != 99 {
				t.Errorf("sanity: FirstOrInit did not assign: %+v", u)
			}
		}},
		{name: "FirstOrInit/existing", run: func(tx *gorm.DB) (any, int64, error) {
			var u ParityUser
			r := tx.Where(ParityUser{Name: "user05"}).Attrs(ParityUser{Age: 99}).FirstOrInit(&u)
			return u, r.RowsAffected, r.Error
		}, check: wantRows(1)},
		{name: "FirstOrInit/assign", run: func(tx *gorm.DB) (any, int64, error) {
			var u ParityUser
			r := tx.Where(ParityUser{Name: "user05"}).Assign(ParityUser{Age: 77}).FirstOrInit(&u)
			return u, r.RowsAffected, r.Error
		}},

		// FindInBatches: ids 1..30 less 9, 18, 27: 27 rows in batches of 7
		// (7, 7, 7, 6), one statement per batch.
		{name: "FindInBatches", queries: 4, run: func(tx *gorm.DB) (any, int64, error) {
			var batch []ParityUser
			var all [][]ParityUser
			var nums []int
			r := tx.Where("id <= ?", 30).FindInBatches(&batch, 7, func(btx *gorm.DB, n int) error {
				all = append(all, append([]ParityUser(nil), batch...))
				nums = append(nums, n, int(btx.RowsAffected))
				return nil
			})
			return struct {
				Batches [][]ParityUser
				Nums    []int
			}{all, nums}, r.RowsAffected, r.Error
		}, check: wantRows(27)},

		// Raw(…).Find
		{name: "Raw/structs", raw: true, run: func(tx *gorm.DB) (any, int64, error) {
			var us []ParityUser
			r := tx.Raw("SELECT id, name, age, score, active, nickname, avatar, created_at, deleted_at FROM parity_users WHERE age = ? ORDER BY id", 23).Find(&us)
			return us, r.RowsAffected, r.Error
		}},
		{name: "Raw/maps", raw: true, run: func(tx *gorm.DB) (any, int64, error) {
			var ms []map[string]any
			r := tx.Raw("SELECT id, name, age, score, active, nickname, avatar, created_at, deleted_at, company_id FROM parity_users WHERE age = ? ORDER BY id", 23).Find(&ms)
			return ms, r.RowsAffected, r.Error
		}},
		{name: "Raw/scalars", raw: true, run: func(tx *gorm.DB) (any, int64, error) {
			var names []string
			r := tx.Raw("SELECT name FROM parity_users WHERE age = ? ORDER BY id", 23).Find(&names)
			return names, r.RowsAffected, r.Error
		}},

		// Joins
		{name: "Joins/where-on-joined", run: func(tx *gorm.DB) (any, int64, error) {
			var us []ParityUser
			r := tx.Joins("Company").
				Where(clause.Eq{Column: clause.Column{Table: "Company", Name: "name"}, Value: "globex"}).
				Order("parity_users.id").Find(&us)
			return us, r.RowsAffected, r.Error
		}, check: func(t *testing.T, dest any, _ int64) {
			us := dest.([]ParityUser)
			if len(us) == 0 || us[0].Company == nil || us[0].Company.Name != "globex" {
				t.Errorf("sanity: join did not load Company: %+v", us)
			}
		}},
		{name: "Joins/left-no-company", run: func(tx *gorm.DB) (any, int64, error) {
			var us []ParityUser
			r := tx.Joins("Company").Where("parity_users.id <= ?", 13).Order("parity_users.id").Find(&us)
			return us, r.RowsAffected, r.Error
		}, check: func(t *testing.T, dest any, _ int64) {
			us := dest.([]ParityUser)
			if len(us) < 6 || us[5].ID != 6 || us[5].Company != nil || us[0].Company == nil {
				t.Errorf("sanity: left join: %+v", us)
			}
		}},
		{name: "Joins/first", run: func(tx *gorm.DB) (any, int64, error) {
			var u ParityUser
			r := tx.Joins("Company").First(&u, 7)
			return u, r.RowsAffected, r.Error
		}, check: wantRows(1)},

		// Select / Distinct / Group / Order
		{name: "Select/subset", run: func(tx *gorm.DB) (any, int64, error) {
			var us []ParityUser
			r := tx.Select("id", "name", "age").Where("age = ?", 20).Order("id").Find(&us)
			return us, r.RowsAffected, r.Error
		}},
		{name: "Select/smaller-struct", run: func(tx *gorm.DB) (any, int64, error) {
			type brief struct {
				ID       uint
				Name     string
				Nickname *string
			}
			var bs []brief
			r := tx.Model(&ParityUser{}).Where("age = ?", 20).Order("id").Find(&bs)
			return bs, r.RowsAffected, r.Error
		}},
		{name: "Distinct/pluck", run: func(tx *gorm.DB) (any, int64, error) {
			var ages []int
			r := tx.Model(&ParityUser{}).Distinct("age").Order("age").Pluck("age", &ages)
			return ages, r.RowsAffected, r.Error
		}},
		{name: "Distinct/structs", run: func(tx *gorm.DB) (any, int64, error) {
			var us []ParityUser
			r := tx.Distinct("age", "active").Order("age, active").Find(&us)
			return us, r.RowsAffected, r.Error
		}},
		{name: "Group/having", run: func(tx *gorm.DB) (any, int64, error) {
			var gs []parityAgeGroup
			r := tx.Model(&ParityUser{}).Select("age, count(*) AS n, sum(score) AS total").
				Group("age").Having("count(*) > ?", 4).Order("age").Find(&gs)
			return gs, r.RowsAffected, r.Error
		}},
		{name: "Order/limit-offset", run: func(tx *gorm.DB) (any, int64, error) {
			var us []ParityUser
			r := tx.Order("age desc, id").Limit(5).Offset(3).Find(&us)
			return us, r.RowsAffected, r.Error
		}, check: wantRows(5)},
		{name: "Scopes/user-scopes", run: func(tx *gorm.DB) (any, int64, error) {
			var us []ParityUser
			r := tx.Scopes(parityAdults, parityActive, byID).Find(&us)
			return us, r.RowsAffected, r.Error
		}},

		// Soft delete
		{name: "SoftDelete/default", run: func(tx *gorm.DB) (any, int64, error) {
			var us []ParityUser
			r := tx.Where("id IN ?", []int{8, 9, 10}).Order("id").Find(&us)
			return us, r.RowsAffected, r.Error
		}, check: wantRows(2)},
		{name: "SoftDelete/unscoped", run: func(tx *gorm.DB) (any, int64, error) {
			var us []ParityUser
			r := tx.Unscoped().Where("id IN ?", []int{8, 9, 10}).Order("id").Find(&us)
			return us, r.RowsAffected, r.Error
		}, check: wantRows(3)},

		// Preload: the parent from the cache, the children from the database.
		{name: "Preload/posts", queries: 2, hitQ: 1, run: func(tx *gorm.DB) (any, int64, error) {
			var us []ParityUser
			r := tx.Preload("Posts", byID).Where("id <= ?", 8).Order("id").Find(&us)
			return us, r.RowsAffected, r.Error
		}, check: func(t *testing.T, dest any, _ int64) {
			us := dest.([]ParityUser)
			if len(us) != 8 || len(us[1].Posts) != 2 || us[2].Posts == nil || len(us[2].Posts) != 0 {
				t.Errorf("sanity: preload: %+v", us)
			}
		}},

		// Destinations that already hold values: GORM scans over them (a
		// struct's primary key becomes a condition; unselected fields and map
		// keys are kept; a not-found leaves them as they were).
		{name: "Prefilled/struct-pk-select-subset", bypass: true, run: func(tx *gorm.DB) (any, int64, error) {
			u := ParityUser{ID: 3, Name: "keep", Score: -1}
			r := tx.Select("id", "age").First(&u)
			return u, r.RowsAffected, r.Error
		}},
		{name: "Prefilled/struct-pk-not-found", notFound: true, bypass: true, run: func(tx *gorm.DB) (any, int64, error) {
			u := ParityUser{ID: 9999, Name: "keep"}
			r := tx.First(&u)
			return u, r.RowsAffected, r.Error
		}},
		{name: "Prefilled/map-keeps-keys", run: func(tx *gorm.DB) (any, int64, error) {
			m := map[string]any{"extra": "keep"}
			r := tx.Model(&ParityUser{}).Where("id = ?", 2).Find(&m)
			return m, r.RowsAffected, r.Error
		}},
		{name: "Prefilled/maps-append", run: func(tx *gorm.DB) (any, int64, error) {
			ms := []map[string]any{{"extra": "keep"}}
			r := tx.Table("parity_users").Where("id = ?", 2).Find(&ms)
			return ms, r.RowsAffected, r.Error
		}},
	}...)
}

// ---------------------------------------------------------------------------
// Running and comparing

type parityResult struct {
	dest    any
	rows    int64
	err     error
	hooks   int64 // AfterFind calls
	queries int64 // statements that reached the database
	panic   string
}

// parityCounter is the test database's counting pool.
type parityCounter interface {
	Queries() int64
	Execs() int64
	Reset()
}

func parityRun(pool parityCounter, tx func() *gorm.DB, run func(*gorm.DB) (any, int64, error)) (res parityResult) {
	h0 := parityAfterFind.Load()
	pool.Reset()
	defer func() {
		if p := recover(); p != nil {
			res.panic = fmt.Sprintf("%v\n%s", p, debug.Stack())
		}
		res.hooks = parityAfterFind.Load() - h0
		res.queries = pool.Queries()
	}()
	res.dest, res.rows, res.err = run(tx())
	return res
}

// parityCompare reports how got differs from want.
func parityCompare(t *testing.T, what string, want, got parityResult, notFound bool) {
	t.Helper()
	if got.panic != "" {
		t.Errorf("%s: panicked: %s", what, got.panic)
		return
	}
	if notFound {
		if !errors.Is(got.err, gorm.ErrRecordNotFound) {
			t.Errorf("%s: error %v; want ErrRecordNotFound", what, got.err)
		}
	} else if got.err != nil {
		t.Errorf("%s: error %v; want none", what, got.err)
	}
	if got.rows != want.rows {
		t.Errorf("%s: RowsAffected %d; want %d", what, got.rows, want.rows)
	}
	if got.hooks != want.hooks {
		t.Errorf("%s: %d AfterFind calls; want %d", what, got.hooks, want.hooks)
	}
	if !reflect.DeepEqual(got.dest, want.dest) {
		t.Errorf("%s: destination differs:\n%s", what, parityDiff(want.dest, got.dest))
	}
}

// parityDiff describes the differences between want and got, path by path,
// then prints both in full.
func parityDiff(want, got any) string {
	var lines []string
	diffValue(&lines, "dest", reflect.ValueOf(want), reflect.ValueOf(got))
	var sb strings.Builder
	for _, l := range lines {
		sb.WriteString("    ")
		sb.WriteString(l)
		sb.WriteByte('\n')
	}
	fmt.Fprintf(&sb, "    want: %s\n    got:  %s", clip(fmt.Sprintf("%#v", want)), clip(fmt.Sprintf("%#v", got)))
	return sb.String()
}

func clip(s string) string {
	const max = 3000
	if len(s) > max {
		return s[:max] + fmt.Sprintf("… (%d more bytes)", len(s)-max)
	}
	return s
}

var timeType = reflect.TypeOf(time.Time{})

func describeTime(t time.Time) string {
	loc := t.Location()
	name := loc.String()
	switch loc {
	case time.UTC:
		name = "time.UTC"
	case time.Local:
		name = "time.Local(" + loc.String() + ")"
	}
	return t.Format(time.RFC3339Nano) + " in " + name
}

func diffValue(out *[]string, path string, a, b reflect.Value) {
	const maxLines = 15
	if len(*out) >= maxLines {
		return
	}
	add := func(format string, args ...any) { *out = append(*out, path+": "+fmt.Sprintf(format, args...)) }
	if !a.IsValid() || !b.IsValid() {
		if a.IsValid() != b.IsValid() {
			add("want valid=%v, got valid=%v", a.IsValid(), b.IsValid())
		}
		return
	}
	if a.Type() != b.Type() {
		add("want type %s, got %s (%s vs %s)", a.Type(), b.Type(), fmtValue(a), fmtValue(b))
		return
	}
	if a.Type() == timeType {
		ta, tb := a.Interface().(time.Time), b.Interface().(time.Time)
		if !reflect.DeepEqual(ta, tb) {
			add("want %s, got %s", describeTime(ta), describeTime(tb))
		}
		return
	}
	switch a.Kind() {
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() || b.IsNil() {
			if a.IsNil() != b.IsNil() {
				add("want %s, got %s", fmtValue(a), fmtValue(b))
			}
			return
		}
		diffValue(out, path, a.Elem(), b.Elem())
	case reflect.Slice:
		if a.IsNil() != b.IsNil() {
			add("want nil=%v (len %d), got nil=%v (len %d)", a.IsNil(), a.Len(), b.IsNil(), b.Len())
		}
		fallthrough
	case reflect.Array:
		if a.Len() != b.Len() {
			add("want len %d, got len %d", a.Len(), b.Len())
		}
		for i := 0; i < a.Len() && i < b.Len(); i++ {
			diffValue(out, fmt.Sprintf("%s[%d]", path, i), a.Index(i), b.Index(i))
		}
	case reflect.Map:
		if a.IsNil() != b.IsNil() {
			add("want nil=%v (len %d), got nil=%v (len %d)", a.IsNil(), a.Len(), b.IsNil(), b.Len())
		}
		keys := map[string]reflect.Value{}
		for _, k := range a.MapKeys() {
			keys[fmt.Sprint(k.Interface())] = k
		}
		for _, k := range b.MapKeys() {
			keys[fmt.Sprint(k.Interface())] = k
		}
		names := make([]string, 0, len(keys))
		for n := range keys {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			k := keys[n]
			va, vb := a.MapIndex(k), b.MapIndex(k)
			p := fmt.Sprintf("%s[%q]", path, n)
			switch {
			case !va.IsValid():
				*out = append(*out, p+": unexpected key, got "+fmtValue(vb))
			case !vb.IsValid():
				*out = append(*out, p+": missing key, want "+fmtValue(va))
			default:
				diffValue(out, p, va, vb)
			}
		}
	case reflect.Struct:
		for i := 0; i < a.NumField(); i++ {
			if !a.Type().Field(i).IsExported() {
				continue
			}
			diffValue(out, path+"."+a.Type().Field(i).Name, a.Field(i), b.Field(i))
		}
	default:
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			add("want %s, got %s", fmtValue(a), fmtValue(b))
		}
	}
}

func fmtValue(v reflect.Value) string {
	if !v.IsValid() {
		return "<invalid>"
	}
	if v.Kind() == reflect.Interface && !v.IsNil() {
		v = v.Elem()
	}
	if v.Type() == timeType {
		return describeTime(v.Interface().(time.Time))
	}
	return fmt.Sprintf("%#v (%s)", v.Interface(), v.Type())
}

// parityUnused reports region stats of a region no query used: the
// invalidations the seeding's writes sent (Stats.Invalidations) are not a
// use.
func parityUnused(s region.Stats) bool {
	s.Invalidations, s.InvalidationFailures, s.InvalidationRetries, s.InvalidationsRetried = 0, 0, 0, 0
	return s == (region.Stats{})
}

// ---------------------------------------------------------------------------
// The matrix

func TestParityMatrix(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		// The main database runs every case; the zone cases of
		// parity_types_test.go also run on databases whose driver is set to
		// return other zones (parityEnvs).
		for _, env := range parityEnvs(t, db) {
			names := make([]string, len(env.cases))
			for i, c := range env.cases {
				names[i] = c.name
			}
			regions, bare := paritySetupWith(t, env.db, env.seed, names...)
			d := parityDefaultsDB(t, env.db)
			for _, c := range env.cases {
				t.Run(c.name, func(t *testing.T) { parityRunCase(t, env.db, bare, regions[c.name], c, d) })
			}
			if env.db == db {
				for _, c := range parityModelCases() {
					t.Run("Model/"+c.name, func(t *testing.T) { parityRunModelCase(t, env.db, bare, d, c) })
				}
			}
		}
	})
}

// parityRunCase runs one case of the matrix on db (bare: the same pool
// without the plugin; r: the case's region).
func parityRunCase(t *testing.T, db *dbtest.DB, bare *gorm.DB, r *region.Region, c parityCase, d *parityDefaults) {
	t.Helper()
	want := c.queries
	if want == 0 {
		want = 1
	}
	compare := func(what string, want, got parityResult) {
		t.Helper()
		if c.scanErr {
			parityCompareScanErr(t, what, want, got)
		} else {
			parityCompare(t, what, want, got, c.notFound)
		}
	}

	bareRes := parityRun(db.Pool, func() *gorm.DB { return bare }, c.run)
	plain := parityRun(db.Pool, func() *gorm.DB { return db.DB }, c.run)
	notStored := r.Stats().NotStored
	miss := parityRun(db.Pool, func() *gorm.DB { return db.Scopes(fromCache(c.name)) }, c.run)
	if c.scanErr {
		if s := r.Stats(); s.NotStored != notStored+1 {
			t.Errorf("miss: region NotStored %d → %d; want one more (a scan error is not stored)", notStored, s.NotStored)
		}
		notStored = r.Stats().NotStored
	}
	hit := parityRun(db.Pool, func() *gorm.DB { return db.Scopes(fromCache(c.name)) }, c.run)

	// The plain answer is GORM's: the expected error, and the
	// same as with no plugin at all.
	if plain.panic != "" {
		t.Fatalf("plain query panicked: %s", plain.panic)
	}
	if c.scanErr {
		if plain.err == nil || errors.Is(plain.err, gorm.ErrRecordNotFound) {
			t.Fatalf("plain query: error %v; want a scan error", plain.err)
		}
	} else if c.notFound != errors.Is(plain.err, gorm.ErrRecordNotFound) || (!c.notFound && plain.err != nil) {
		t.Fatalf("plain query: error %v (want ErrRecordNotFound: %v)", plain.err, c.notFound)
	}
	if c.notFound && plain.rows != 0 {
		t.Errorf("plain query: not found with RowsAffected %d", plain.rows)
	}
	if c.check != nil {
		c.check(t, plain.dest, plain.rows)
	}
	compare("without plugin vs plain", bareRes, plain)
	if bareRes.queries != want || plain.queries != want {
		t.Errorf("statements: %d without plugin, %d plain; want %d", bareRes.queries, plain.queries, want)
	}

	compare("miss", plain, miss)
	if miss.queries != want {
		t.Errorf("miss: %d statements reached the database; want %d", miss.queries, want)
	}
	// Hits after the first are copies of the decoded answer
	// (memo.go): what a caller does to its answer, scribbled
	// over here, must reach no other caller.
	for i, what := range []string{"hit", "second hit", "third hit"} {
		if i > 0 {
			hit = parityRun(db.Pool, func() *gorm.DB { return db.Scopes(fromCache(c.name)) }, c.run)
		}
		compare(what, plain, hit)
		switch {
		case c.bypass:
			if hit.queries != want || !parityUnused(r.Stats()) {
				t.Errorf("bypass: %s made %d statements with region stats %+v; want %d and an unused region", what, hit.queries, r.Stats(), want)
			}
		case c.scanErr:
			// Nothing was stored: the "hit" is another miss.
			if hit.queries != want {
				t.Errorf("%s: %d statements reached the database; want %d (a scan error is not stored)", what, hit.queries, want)
			}
			if s := r.Stats(); s.NotStored != notStored+1 {
				t.Errorf("%s: region NotStored %d → %d; want one more (a scan error is not stored)", what, notStored, s.NotStored)
			}
			notStored = r.Stats().NotStored
		case hit.queries != c.hitQ:
			t.Errorf("%s: %d statements reached the database; want %d", what, hit.queries, c.hitQ)
		}
		scribble(reflect.ValueOf(hit.dest))
	}
	s := r.Stats()
	switch {
	case c.bypass:
	case c.scanErr:
		if s.Hits != 0 || s.DecodeFailures != 0 || s.Errors != 0 {
			t.Errorf("region stats %+v: want no hits, no decode failures, no errors", s)
		}
	case s.DecodeFailures != 0 || s.NotStored != 0 || s.Errors != 0 || s.Hits == 0:
		t.Errorf("region stats %+v: want hits, no decode failures, nothing left unstored, no errors", s)
	}
	if t.Failed() {
		t.Logf("region stats %+v; statements: plain %d, miss %d, hit %d", r.Stats(), plain.queries, miss.queries, hit.queries)
	}
	parityRunDefault(t, db, d, d.tables, c, plain)
}

// ---------------------------------------------------------------------------
// Cache by default in the matrix: every case also runs, without a scope, on
// a *gorm.DB over the same pool whose plugin caches every table of the
// matrix (WithCachedTables), with NoCache and without; and the cases of an
// opted-in twin of ParityUser (CacheRegioner) run there too. Queries cached
// by default must be indistinguishable from the same queries without the
// cache, as FromCache ones are.

// parityDefaults is the matrix's database caching by default.
type parityDefaults struct {
	db       *gorm.DB
	tables   *region.Region    // WithCachedTables of every table of the matrix
	model    *region.Region    // ParityCachedUser's CacheRegion
	outcomes []dogpile.Outcome // of each statement since last cleared
}

// parityDefaultsDB opens db's pool again with a plugin caching every table
// of db by default, and records the outcome of each statement.
func parityDefaultsDB(t *testing.T, db *dbtest.DB) *parityDefaults {
	t.Helper()
	tables, err := db.Migrator().GetTables()
	dbtest.Must(t, err)
	d := &parityDefaults{
		tables: region.New(memory.New(), region.WithExpiration(time.Minute), region.WithName("parity-default")),
		model:  region.New(memory.New(), region.WithExpiration(time.Minute), region.WithName("parity-model")),
	}
	cfg := &gorm.Config{Logger: logger.Discard}
	var conn gorm.ConnPool = db.Pool
	switch db.Dialect {
	case "sqlite":
		d.db, err = gorm.Open(sqlite.New(sqlite.Config{Conn: conn}), cfg)
	case "postgres":
		d.db, err = gorm.Open(postgres.New(postgres.Config{Conn: conn}), cfg)
	default:
		t.Fatalf("dialect %q", db.Dialect)
	}
	dbtest.Must(t, err)
	dbtest.Must(t, d.db.Use(dogpile.New(map[string]*region.Region{"parity-default": d.tables, "parity-model": d.model},
		dogpile.WithCachedTables("parity-default", tables...))))
	dbtest.Must(t, d.db.Callback().Query().After("gorm:query").Before("gorm:preload").Register("parity:outcome", func(tx *gorm.DB) {
		d.outcomes = append(d.outcomes, dogpile.OutcomeOf(tx))
	}))
	return d
}

// run runs c on tx, and returns its result and the outcome of its first
// (top-level) statement.
func (d *parityDefaults) run(db *dbtest.DB, tx func() *gorm.DB, c parityCase) (parityResult, dogpile.Outcome) {
	d.outcomes = d.outcomes[:0]
	res := parityRun(db.Pool, tx, c.run)
	if len(d.outcomes) == 0 {
		return res, dogpile.NotCached
	}
	return res, d.outcomes[0]
}

// parityRunDefault runs case c on d with NoCache (twice) and cached by
// default in r (a miss and two hits), and compares each with plain.
func parityRunDefault(t *testing.T, db *dbtest.DB, d *parityDefaults, r *region.Region, c parityCase, plain parityResult) {
	t.Helper()
	want := c.queries
	if want == 0 {
		want = 1
	}
	compare := func(what string, got parityResult) {
		t.Helper()
		if c.scanErr {
			parityCompareScanErr(t, what, plain, got)
		} else {
			parityCompare(t, what, plain, got, c.notFound)
		}
	}
	// A miss of its own: the queries of other cases may be this one's.
	dbtest.Must(t, r.Invalidate(context.Background(), true))
	s0 := r.Stats()
	for _, what := range []string{"NoCache", "NoCache again"} {
		res, o := d.run(db, func() *gorm.DB { return d.db.Scopes(dogpile.NoCache()) }, c)
		compare(what, res)
		if res.queries != want || o != dogpile.NotCached {
			t.Errorf("%s: %d statements, outcome %v; want %d, not cached", what, res.queries, o, want)
		}
	}
	if s := r.Stats(); s != s0 {
		t.Errorf("NoCache used the region: %+v → %+v", s0, s)
	}
	for i, what := range []string{"default miss", "default hit", "default second hit"} {
		res, o := d.run(db, func() *gorm.DB { return d.db }, c)
		compare(what, res)
		wantQ, wantO := want, dogpile.Miss
		switch {
		case c.raw:
			wantO = dogpile.NotCached
		case c.bypass:
			wantO = dogpile.Bypassed
		case c.scanErr: // never stored: every run is a miss
		case i > 0:
			wantQ, wantO = c.hitQ, dogpile.Hit
		}
		if res.queries != wantQ || o != wantO {
			t.Errorf("%s: %d statements, outcome %v; want %d, %v", what, res.queries, o, wantQ, wantO)
		}
		scribble(reflect.ValueOf(res.dest))
	}
	s := r.Stats()
	switch {
	case c.raw || c.bypass:
		if s != s0 {
			t.Errorf("default: region used: %+v → %+v; want unused", s0, s)
		}
	case c.scanErr:
		if s.NotStored-s0.NotStored != 3 || s.Hits != s0.Hits {
			t.Errorf("default: region %+v → %+v; want 3 not stored, no hits", s0, s)
		}
	case s.Hits == s0.Hits || s.NotStored != s0.NotStored || s.DecodeFailures != s0.DecodeFailures || s.Errors != s0.Errors:
		t.Errorf("default: region %+v → %+v; want hits, nothing unstored, no decode failures, no errors", s0, s)
	}
}

// ParityCachedUser is ParityUser, on its table, opted in to cache by
// default: its CacheRegion wins over the table option on parity_users.
type ParityCachedUser struct {
	ID        uint
	Name      string
	Age       int
	Score     float64
	Active    bool
	Rank      int64
	Small     int16
	Nickname  *string
	Avatar    []byte
	CompanyID *uint
	Company   *ParityCompany
	Posts     []ParityPost `gorm:"foreignKey:ParityUserID"`
	CreatedAt time.Time
	UpdatedAt time.Time
	DeletedAt gorm.DeletedAt `gorm:"index"`

	Loaded string `gorm:"-"`
}

func (ParityCachedUser) TableName() string { return "parity_users" }

func (ParityCachedUser) CacheRegion() string { return "parity-model" }

func (u *ParityCachedUser) AfterFind(*gorm.DB) error {
	parityAfterFind.Add(1)
	u.Loaded = "loaded:" + u.Name
	return nil
}

// parityModelCases are queries of the opted-in model.
func parityModelCases() []parityCase {
	return append(userCases[ParityCachedUser](), []parityCase{
		{name: "Find/slice-of-pointers-unscoped", run: func(tx *gorm.DB) (any, int64, error) {
			var us []*ParityCachedUser
			r := tx.Unscoped().Where("age = ?", 20).Order("id").Find(&us)
			return us, r.RowsAffected, r.Error
		}},
		{name: "Joins/company", run: func(tx *gorm.DB) (any, int64, error) {
			var us []ParityCachedUser
			r := tx.Joins("Company").
				Where(clause.Eq{Column: clause.Column{Table: "Company", Name: "name"}, Value: "globex"}).
				Order("parity_users.id").Find(&us)
			return us, r.RowsAffected, r.Error
		}},
		{name: "Preload/posts", queries: 2, hitQ: 1, run: func(tx *gorm.DB) (any, int64, error) {
			var us []ParityCachedUser
			r := tx.Preload("Posts", byID).Where("id <= ?", 8).Order("id").Find(&us)
			return us, r.RowsAffected, r.Error
		}, check: func(t *testing.T, dest any, _ int64) {
			us := dest.([]ParityCachedUser)
			if len(us) != 8 || len(us[1].Posts) != 2 || us[2].Posts == nil || len(us[2].Posts) != 0 {
				t.Errorf("sanity: preload: %+v", us)
			}
		}},
		{name: "Prefilled/struct-pk", bypass: true, run: func(tx *gorm.DB) (any, int64, error) {
			u := ParityCachedUser{ID: 3, Name: "keep"}
			r := tx.Select("id", "age").First(&u)
			return u, r.RowsAffected, r.Error
		}},
	}...)
}

// parityRunModelCase runs a case of the opted-in model: without the plugin
// (bare), then on d with NoCache and cached by default in the model's
// region, whose table option is never used.
func parityRunModelCase(t *testing.T, db *dbtest.DB, bare *gorm.DB, d *parityDefaults, c parityCase) {
	t.Helper()
	plain := parityRun(db.Pool, func() *gorm.DB { return bare }, c.run)
	if plain.panic != "" || c.notFound != errors.Is(plain.err, gorm.ErrRecordNotFound) || (!c.notFound && plain.err != nil) {
		t.Fatalf("query without the plugin: error %v, panic %s", plain.err, plain.panic)
	}
	if c.check != nil {
		c.check(t, plain.dest, plain.rows)
	}
	t0 := d.tables.Stats()
	parityRunDefault(t, db, d, d.model, c, plain)
	if s := d.tables.Stats(); s != t0 {
		t.Errorf("the table option's region was used: %+v → %+v; want the model's only", t0, s)
	}
}

// ---------------------------------------------------------------------------
// Row, Rows and Scan bypass the cache; DryRun and ToSQL never touch it.

func TestParityBypass(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		regions, _ := paritySetup(t, db, "bypass")
		r := regions["bypass"]
		scoped := func() *gorm.DB { return db.Scopes(fromCache("bypass")) }

		for i := 0; i < 3; i++ {
			db.Pool.Reset()
			var name string
			dbtest.Must(t, scoped().Model(&ParityUser{}).Select("name").Where("id = ?", 1).Row().Scan(&name))
			if name != "user01" || db.Pool.Queries() != 1 {
				t.Errorf("Row #%d: name %q, %d statements; want user01, 1", i, name, db.Pool.Queries())
			}

			db.Pool.Reset()
			rows, err := scoped().Model(&ParityUser{}).Select("name").Where("age = ?", 21).Order("id").Rows()
			dbtest.Must(t, err)
			n := 0
			for rows.Next() {
				n++
			}
			dbtest.Must(t, rows.Err())
			dbtest.Must(t, rows.Close())
			if n == 0 || db.Pool.Queries() != 1 {
				t.Errorf("Rows #%d: %d rows, %d statements; want some rows, 1 statement", i, n, db.Pool.Queries())
			}

			plain := parityRun(db.Pool, func() *gorm.DB { return db.DB }, parityScan)
			cached := parityRun(db.Pool, scoped, parityScan)
			parityCompare(t, fmt.Sprintf("Scan #%d", i), plain, cached, false)
			if cached.queries != 1 {
				t.Errorf("Scan #%d: %d statements; want 1", i, cached.queries)
			}

			plain = parityRun(db.Pool, func() *gorm.DB { return db.DB }, parityRawScan)
			cached = parityRun(db.Pool, scoped, parityRawScan)
			parityCompare(t, fmt.Sprintf("Raw.Scan #%d", i), plain, cached, false)
			if cached.queries != 1 {
				t.Errorf("Raw.Scan #%d: %d statements; want 1", i, cached.queries)
			}
		}
		if s := r.Stats(); !parityUnused(s) {
			t.Errorf("Row/Rows/Scan touched the region: %+v", s)
		}
	})
}

func parityScan(tx *gorm.DB) (any, int64, error) {
	var us []ParityUser
	r := tx.Model(&ParityUser{}).Where("age = ?", 21).Order("id").Scan(&us)
	return us, r.RowsAffected, r.Error
}

func parityRawScan(tx *gorm.DB) (any, int64, error) {
	var us []ParityUser
	r := tx.Raw("SELECT * FROM parity_users WHERE age = ? ORDER BY id", 21).Scan(&us)
	return us, r.RowsAffected, r.Error
}

func TestParityDryRun(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		regions, _ := paritySetup(t, db, "dry")
		r := regions["dry"]
		dry := func(scoped bool) *gorm.DB {
			tx := db.Session(&gorm.Session{DryRun: true})
			if scoped {
				tx = tx.Scopes(fromCache("dry"))
			}
			return tx
		}
		type finisher struct {
			name string
			run  func(*gorm.DB) *gorm.DB
		}
		for _, f := range []finisher{
			{"Find", func(tx *gorm.DB) *gorm.DB { var us []ParityUser; return tx.Where("age = ?", 21).Find(&us) }},
			{"First", func(tx *gorm.DB) *gorm.DB { var u ParityUser; return tx.First(&u, 9999) }},
			{"Count", func(tx *gorm.DB) *gorm.DB { var n int64; return tx.Model(&ParityUser{}).Count(&n) }},
			{"Pluck", func(tx *gorm.DB) *gorm.DB { var s []string; return tx.Model(&ParityUser{}).Pluck("name", &s) }},
			{"Raw.Find", func(tx *gorm.DB) *gorm.DB {
				var ms []map[string]any
				return tx.Raw("SELECT * FROM parity_users WHERE id = ?", 1).Find(&ms)
			}},
		} {
			db.Pool.Reset()
			plain := f.run(dry(false))
			cached := f.run(dry(true))
			if q := db.Pool.Queries() + db.Pool.Execs(); q != 0 {
				t.Errorf("DryRun %s: %d statements reached the database", f.name, q)
			}
			if !errors.Is(cached.Error, plain.Error) {
				t.Errorf("DryRun %s: error %v; without FromCache %v", f.name, cached.Error, plain.Error)
			}
			if ps, cs := plain.Statement.SQL.String(), cached.Statement.SQL.String(); ps != cs || cs == "" {
				t.Errorf("DryRun %s: SQL %q; without FromCache %q", f.name, cs, ps)
			}
			if !reflect.DeepEqual(plain.Statement.Vars, cached.Statement.Vars) {
				t.Errorf("DryRun %s: vars %v; without FromCache %v", f.name, cached.Statement.Vars, plain.Statement.Vars)
			}

			db.Pool.Reset()
			ps := db.ToSQL(f.run)
			cs := db.ToSQL(func(tx *gorm.DB) *gorm.DB { return f.run(tx.Scopes(fromCache("dry"))) })
			if q := db.Pool.Queries() + db.Pool.Execs(); q != 0 {
				t.Errorf("ToSQL %s: %d statements reached the database", f.name, q)
			}
			if ps != cs || cs == "" {
				t.Errorf("ToSQL %s: %q; without FromCache %q", f.name, cs, ps)
			}
		}
		if s := r.Stats(); s.Misses != 0 || s.Hits != 0 || s.Regenerations != 0 || !parityUnused(s) {
			t.Errorf("DryRun/ToSQL touched the region: %+v", s)
		}
	})
}

// ---------------------------------------------------------------------------
// Unknown regions and key separation

func TestParityUnknownRegion(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		paritySetup(t, db, "default")
		nope := func() *gorm.DB { return db.Scopes(dogpile.FromCache("nope")) }
		for _, c := range []struct {
			name string
			run  func(*gorm.DB) (any, int64, error)
		}{
			{"First", func(tx *gorm.DB) (any, int64, error) {
				var u ParityUser
				r := tx.First(&u, 1)
				return u, r.RowsAffected, r.Error
			}},
			{"Find", func(tx *gorm.DB) (any, int64, error) {
				var us []ParityUser
				r := tx.Find(&us)
				return us, r.RowsAffected, r.Error
			}},
			{"Count", func(tx *gorm.DB) (any, int64, error) {
				var n int64
				r := tx.Model(&ParityUser{}).Count(&n)
				return n, r.RowsAffected, r.Error
			}},
			{"Pluck", func(tx *gorm.DB) (any, int64, error) {
				var s []string
				r := tx.Model(&ParityUser{}).Pluck("name", &s)
				return s, r.RowsAffected, r.Error
			}},
			{"Preload", func(tx *gorm.DB) (any, int64, error) {
				var us []ParityUser
				r := tx.Preload("Posts").Find(&us)
				return us, r.RowsAffected, r.Error
			}},
		} {
			res := parityRun(db.Pool, nope, c.run)
			if res.panic != "" {
				t.Errorf("%s: panicked: %s", c.name, res.panic)
				continue
			}
			if !errors.Is(res.err, dogpile.ErrUnknownRegion) {
				t.Errorf("%s: error %v; want one wrapping ErrUnknownRegion", c.name, res.err)
			}
			if res.queries != 0 {
				t.Logf("%s: %d statements reached the database with an unknown region", c.name, res.queries)
			}
		}
	})
}

// TestParityKeySeparation runs the same SQL into different destination
// types: each is a miss of its own first, and a hit answers with its own
// type's value.
func TestParityKeySeparation(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		regions, _ := paritySetup(t, db, "keys", "soft")
		r := regions["keys"]
		where := func(tx *gorm.DB) *gorm.DB { return tx.Model(&ParityUser{}).Where("age = ?", 21).Order("id") }
		type step struct {
			name string
			run  func(*gorm.DB) (any, int64, error)
		}
		steps := []step{
			{"Pluck []string", func(tx *gorm.DB) (any, int64, error) {
				var s []string
				r := where(tx).Pluck("name", &s)
				return s, r.RowsAffected, r.Error
			}},
			{"Select(name).Find []ParityUser", func(tx *gorm.DB) (any, int64, error) {
				var us []ParityUser
				r := where(tx).Select("name").Find(&us)
				return us, r.RowsAffected, r.Error
			}},
			{"Select(name).Find []map", func(tx *gorm.DB) (any, int64, error) {
				var ms []map[string]any
				r := where(tx).Select("name").Find(&ms)
				return ms, r.RowsAffected, r.Error
			}},
			{"Pluck []*string", func(tx *gorm.DB) (any, int64, error) {
				var s []*string
				r := where(tx).Pluck("name", &s)
				return s, r.RowsAffected, r.Error
			}},
			{"Select(name).Find *string", func(tx *gorm.DB) (any, int64, error) {
				var s string
				r := where(tx).Select("name").Find(&s)
				return s, r.RowsAffected, r.Error
			}},
			{"Count", func(tx *gorm.DB) (any, int64, error) {
				var n int64
				r := where(tx).Count(&n)
				return n, r.RowsAffected, r.Error
			}},
		}
		// The first five share their SQL text.
		sql0 := db.ToSQL(func(tx *gorm.DB) *gorm.DB { _, _, _ = steps[0].run(tx); return tx })
		if !strings.Contains(sql0, "SELECT") {
			t.Fatalf("ToSQL of the Pluck: %q", sql0)
		}
		for _, s := range steps[1:5] {
			if q := db.ToSQL(func(tx *gorm.DB) *gorm.DB { _, _, _ = s.run(tx); return tx }); q != sql0 {
				t.Logf("%s: SQL %q differs from Pluck's %q", s.name, q, sql0)
			}
		}
		plain := make([]parityResult, len(steps))
		for i, s := range steps {
			plain[i] = parityRun(db.Pool, func() *gorm.DB { return db.DB }, s.run)
		}
		for round, wantQ := range []int64{1, 0} {
			for i, s := range steps {
				res := parityRun(db.Pool, func() *gorm.DB { return db.Scopes(fromCache("keys")) }, s.run)
				parityCompare(t, fmt.Sprintf("round %d, %s", round, s.name), plain[i], res, false)
				if res.queries != wantQ {
					t.Errorf("round %d, %s: %d statements; want %d", round, s.name, res.queries, wantQ)
				}
			}
		}
		t.Logf("keys region: %+v", r.Stats())

		// Unscoped and scoped differ in their SQL: separate entries.
		ids := []int{8, 9, 10}
		scopedFind := func(tx *gorm.DB) (any, int64, error) {
			var us []ParityUser
			r := tx.Where("id IN ?", ids).Order("id").Find(&us)
			return us, r.RowsAffected, r.Error
		}
		unscopedFind := func(tx *gorm.DB) (any, int64, error) {
			var us []ParityUser
			r := tx.Unscoped().Where("id IN ?", ids).Order("id").Find(&us)
			return us, r.RowsAffected, r.Error
		}
		soft := func() *gorm.DB { return db.Scopes(fromCache("soft")) }
		for round, wantQ := range []int64{1, 0} {
			for _, f := range []struct {
				name  string
				run   func(*gorm.DB) (any, int64, error)
				nrows int
			}{{"scoped", scopedFind, 2}, {"unscoped", unscopedFind, 3}} {
				res := parityRun(db.Pool, soft, f.run)
				if res.panic != "" || res.err != nil {
					t.Fatalf("round %d %s: %v %s", round, f.name, res.err, res.panic)
				}
				if us := res.dest.([]ParityUser); len(us) != f.nrows {
					t.Errorf("round %d, %s: %d rows; want %d", round, f.name, len(us), f.nrows)
				}
				if res.queries != wantQ {
					t.Errorf("round %d, %s: %d statements; want %d", round, f.name, res.queries, wantQ)
				}
			}
		}
	})
}
