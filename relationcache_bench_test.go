package dogpile_test

import (
	"fmt"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/region"
)

type RcBenchUser struct {
	ID        uint
	Name      string
	Email     string
	CreatedAt time.Time
	Posts     []RcBenchPost
}

type RcBenchPost struct {
	ID            uint
	RcBenchUserID uint         `gorm:"index"`
	RcBenchUser   *RcBenchUser // back-reference: per-parent invalidation
	Title         string
	Body          string
	Views         int
	Published     bool
	CreatedAt     time.Time
}

const (
	rcBenchParents  = 100
	rcBenchChildren = 5
)

func rcBenchDB(b *testing.B) (*dbtest.DB, *region.Region) { return rcBenchDBOn(b, dbtest.SQLite) }

func rcBenchDBOn(b *testing.B, open func(testing.TB) *dbtest.DB) (*dbtest.DB, *region.Region) {
	db := open(b)
	r := region.New(memory.New(), region.WithExpiration(time.Hour))
	dbtest.Must(b, db.Use(dogpile.New(map[string]*region.Region{"default": r})))
	dbtest.Must(b, db.AutoMigrate(&RcBenchUser{}, &RcBenchPost{}))
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	users := make([]RcBenchUser, rcBenchParents)
	for i := range users {
		users[i] = RcBenchUser{Name: fmt.Sprintf("user-%d", i), Email: fmt.Sprintf("u%d@example.com", i), CreatedAt: base.Add(time.Duration(i) * time.Minute)}
	}
	dbtest.Must(b, db.Create(&users).Error)
	var posts []RcBenchPost
	for _, u := range users {
		for j := 0; j < rcBenchChildren; j++ {
			posts = append(posts, RcBenchPost{RcBenchUserID: u.ID, Title: fmt.Sprintf("post %d/%d", u.ID, j),
				Body: "a body of a few words, as posts have", Views: int(u.ID) * j, Published: j%2 == 0,
				CreatedAt: base.Add(time.Duration(int(u.ID)*10+j) * time.Second)})
		}
	}
	dbtest.Must(b, db.CreateInBatches(posts, 100).Error)
	return db, r
}

func rcBenchLoad(b *testing.B, tx *gorm.DB) {
	var us []RcBenchUser
	if err := tx.Preload("Posts", rcByID).Order("id").Find(&us).Error; err != nil {
		b.Fatal(err)
	}
	if len(us) != rcBenchParents || len(us[rcBenchParents-1].Posts) != rcBenchChildren {
		b.Fatalf("loaded %d users", len(us))
	}
}

// BenchmarkRcPreload: Find of 100 parents with Preload of their 5 children
// each, on SQLite:
//
//   - Uncached: no scope (the plugin registered);
//   - AllHits: FromCache on the parent query and RelationshipCache, both hits;
//   - RelOnly: the parent query uncached, the children all hits;
//   - HalfCached: FromCache and RelationshipCache, with the children of half
//     of the parents invalidated before each run (a write to one post of
//     each, outside the timer): one preload query for 50 parents.
func BenchmarkRcPreload(b *testing.B) {
	b.Run("Uncached", func(b *testing.B) {
		db, _ := rcBenchDB(b)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			rcBenchLoad(b, db.DB)
		}
	})
	b.Run("AllHits", func(b *testing.B) {
		db, _ := rcBenchDB(b)
		scoped := func() *gorm.DB { return db.Scopes(dogpile.FromCache("default"), rcRC("Posts")) }
		rcBenchLoad(b, scoped())
		db.Pool.Reset()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			rcBenchLoad(b, scoped())
		}
		b.StopTimer()
		if q := db.Pool.Queries(); q != 0 {
			b.Fatalf("%d queries on hits", q)
		}
	})
	b.Run("RelOnly", func(b *testing.B) {
		db, _ := rcBenchDB(b)
		scoped := func() *gorm.DB { return db.Scopes(rcRC("Posts")) }
		rcBenchLoad(b, scoped())
		db.Pool.Reset()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			rcBenchLoad(b, scoped())
		}
		b.StopTimer()
		if q := db.Pool.Queries(); q != int64(b.N) {
			b.Fatalf("%d queries for %d runs; want the parent query only", q, b.N)
		}
	})
	b.Run("HalfCached", func(b *testing.B) {
		db, r := rcBenchDB(b)
		scoped := func() *gorm.DB { return db.Scopes(dogpile.FromCache("default"), rcRC("Posts")) }
		var cold []RcBenchPost // one post of every other parent
		dbtest.Must(b, db.Where("rc_bench_user_id % 2 = 0").Where("id % ? = 0", rcBenchChildren).Order("id").Find(&cold).Error)
		if len(cold) != rcBenchParents/2 {
			b.Fatalf("%d cold posts", len(cold))
		}
		invalidate := func() { dbtest.Must(b, db.Save(&cold).Error) }
		rcBenchLoad(b, scoped())
		// Sanity: the write makes exactly half of the parents miss.
		invalidate()
		m0 := r.Stats().Misses
		db.Pool.Reset()
		rcBenchLoad(b, scoped())
		if m, q := r.Stats().Misses-m0, db.Pool.Queries(); m != rcBenchParents/2 || q != 1 {
			b.Fatalf("after the write: %d misses, %d queries; want %d and 1", m, q, rcBenchParents/2)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			invalidate()
			b.StartTimer()
			rcBenchLoad(b, scoped())
		}
	})
}

// BenchmarkRcPreloadPostgres is BenchmarkRcPreload's uncached and all-hits
// cases on the real PostgreSQL server, where a query costs a round trip.
func BenchmarkRcPreloadPostgres(b *testing.B) {
	b.Run("Uncached", func(b *testing.B) {
		db, _ := rcBenchDBOn(b, dbtest.Postgres)
		b.ReportAllocs()
		for b.Loop() {
			rcBenchLoad(b, db.DB)
		}
	})
	b.Run("AllHits", func(b *testing.B) {
		db, _ := rcBenchDBOn(b, dbtest.Postgres)
		scoped := func() *gorm.DB { return db.Scopes(dogpile.FromCache("default"), rcRC("Posts")) }
		rcBenchLoad(b, scoped())
		db.Pool.Reset()
		b.ReportAllocs()
		for b.Loop() {
			rcBenchLoad(b, scoped())
		}
		if q := db.Pool.Queries(); q != 0 {
			b.Fatalf("%d queries reached the database during hits", q)
		}
	})
}
