package dogpile_test

import (
	"fmt"
	"testing"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/callbacks"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/region"
)

// benchItem is a typical row: a few columns of common types.
type benchItem struct {
	ID        uint
	Name      string
	Category  string
	Price     int
	Stock     int
	Active    bool
	CreatedAt time.Time
	UpdatedAt time.Time
}

func benchDB(b *testing.B) (*dbtest.DB, *region.Region) {
	db := dbtest.SQLite(b)
	r := region.New(memory.New(), region.WithExpiration(time.Hour))
	dbtest.Must(b, db.Use(dogpile.New(map[string]*region.Region{"default": r})))
	dbtest.Must(b, db.AutoMigrate(&benchItem{}))
	items := make([]benchItem, 1000)
	for i := range items {
		items[i] = benchItem{Name: fmt.Sprintf("item-%d", i), Category: fmt.Sprintf("c%d", i%40), Price: i * 3, Stock: i % 17, Active: i%2 == 0}
	}
	dbtest.Must(b, db.CreateInBatches(items, 200).Error)
	return db, r
}

// floorDB is a second *gorm.DB on the same database whose query chain only
// builds the SQL and decodes a prepared payload into the destination: the
// cost floor of any cache that answers after GORM built the statement. Its
// queries are given a scope that does nothing, as FromCache is a scope.
func floorDB(b *testing.B, db *dbtest.DB, payload func(dest any) []byte) *gorm.DB {
	floor, err := gorm.Open(db.Dialector, &gorm.Config{Logger: db.Config.Logger})
	dbtest.Must(b, err)
	codec := region.MsgpackCodec{}
	dbtest.Must(b, floor.Callback().Query().Replace("gorm:query", func(tx *gorm.DB) {
		callbacks.BuildQuerySQL(tx)
		_ = tx.Statement.SQL.String()
		if err := codec.Unmarshal(payload(tx.Statement.Dest), tx.Statement.Dest); err != nil {
			tx.AddError(err)
		}
		tx.RowsAffected = 1
	}))
	return floor
}

func noScope(tx *gorm.DB) *gorm.DB { return tx }

// decodingDB is a second *gorm.DB on the same database whose plugin keeps no
// decoded answers (WithDecodedCache(0)): every hit decodes its bytes. It
// shows what a hit costs when the memo cannot help (first hit of a key in a
// process, or an entry another process rewrote).
func decodingDB(b *testing.B, db *dbtest.DB) *gorm.DB {
	tx, err := gorm.Open(db.Dialector, &gorm.Config{Logger: db.Config.Logger})
	dbtest.Must(b, err)
	r := region.New(memory.New(), region.WithExpiration(time.Hour))
	dbtest.Must(b, tx.Use(dogpile.New(map[string]*region.Region{"default": r}, dogpile.WithDecodedCache(0))))
	return tx
}

func BenchmarkFirstByPK(b *testing.B) {
	db, _ := benchDB(b)
	var want benchItem
	dbtest.Must(b, db.First(&want, 500).Error)
	encoded, err := region.MsgpackCodec{}.Marshal(&want)
	dbtest.Must(b, err)

	// uncached: the plugin registered, the query without FromCache.
	b.Run("uncached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var it benchItem
			if err := db.First(&it, 500).Error; err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("no-plugin", func(b *testing.B) {
		plain, err := gorm.Open(db.Dialector, &gorm.Config{Logger: db.Config.Logger})
		dbtest.Must(b, err)
		b.ReportAllocs()
		for b.Loop() {
			var it benchItem
			if err := plain.First(&it, 500).Error; err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fromcache-hit", func(b *testing.B) {
		// A scope is built once and reused, as the floor's is.
		cached := dogpile.FromCache("default")
		var it benchItem
		dbtest.Must(b, db.Scopes(cached).First(&it, 500).Error)
		db.Pool.Reset()
		b.ReportAllocs()
		for b.Loop() {
			var it benchItem
			if err := db.Scopes(cached).First(&it, 500).Error; err != nil {
				b.Fatal(err)
			}
		}
		if q := db.Pool.Queries(); q != 0 {
			b.Fatalf("%d queries reached the database during hits", q)
		}
	})
	// The no-cliff benchmark (the hit after 100,000 distinct SQL texts) is
	// BenchmarkInlineFirst's hit-after-100k-sql (bench_inline_test.go).
	b.Run("fromcache-hit-decoding", func(b *testing.B) {
		tx, cached := decodingDB(b, db), dogpile.FromCache("default")
		var it benchItem
		dbtest.Must(b, tx.Scopes(cached).First(&it, 500).Error)
		db.Pool.Reset()
		b.ReportAllocs()
		for b.Loop() {
			var it benchItem
			if err := tx.Scopes(cached).First(&it, 500).Error; err != nil {
				b.Fatal(err)
			}
		}
		if q := db.Pool.Queries(); q != 0 {
			b.Fatalf("%d queries reached the database during hits", q)
		}
	})
	b.Run("floor-build-and-decode", func(b *testing.B) {
		floor := floorDB(b, db, func(any) []byte { return encoded })
		b.ReportAllocs()
		for b.Loop() {
			var it benchItem
			if err := floor.Scopes(noScope).First(&it, 500).Error; err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkFind25(b *testing.B) {
	db, _ := benchDB(b)
	var want []benchItem
	query := func(tx *gorm.DB) *gorm.DB { return tx.Where("category = ?", "c7").Order("id") }
	dbtest.Must(b, query(db.DB).Find(&want).Error)
	if len(want) != 25 {
		b.Fatalf("seed gives %d rows, want 25", len(want))
	}
	encoded, err := region.MsgpackCodec{}.Marshal(&want)
	dbtest.Must(b, err)

	b.Run("uncached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var items []benchItem
			if err := query(db.DB).Find(&items).Error; err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fromcache-hit", func(b *testing.B) {
		cached := dogpile.FromCache("default")
		var items []benchItem
		dbtest.Must(b, query(db.Scopes(cached)).Find(&items).Error)
		db.Pool.Reset()
		b.ReportAllocs()
		for b.Loop() {
			var items []benchItem
			if err := query(db.Scopes(cached)).Find(&items).Error; err != nil {
				b.Fatal(err)
			}
		}
		if q := db.Pool.Queries(); q != 0 {
			b.Fatalf("%d queries reached the database during hits", q)
		}
	})
	b.Run("fromcache-hit-decoding", func(b *testing.B) {
		tx, cached := decodingDB(b, db), dogpile.FromCache("default")
		var items []benchItem
		dbtest.Must(b, query(tx.Scopes(cached)).Find(&items).Error)
		db.Pool.Reset()
		b.ReportAllocs()
		for b.Loop() {
			var items []benchItem
			if err := query(tx.Scopes(cached)).Find(&items).Error; err != nil {
				b.Fatal(err)
			}
		}
		if q := db.Pool.Queries(); q != 0 {
			b.Fatalf("%d queries reached the database during hits", q)
		}
	})
	b.Run("floor-build-and-decode", func(b *testing.B) {
		floor := floorDB(b, db, func(any) []byte { return encoded })
		b.ReportAllocs()
		for b.Loop() {
			var items []benchItem
			if err := query(floor.Scopes(noScope)).Find(&items).Error; err != nil {
				b.Fatal(err)
			}
		}
	})
}
