package dogpileotel_test

import (
	"database/sql"
	"fmt"
	"testing"
	"time"

	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	dogpileotel "github.com/dogpile-go/dogpile/otel"
	"github.com/dogpile-go/dogpile/region"
)

// User is a model as applications have them: a has-many association and
// time columns.
type User struct {
	ID        uint
	Name      string
	Email     string
	Age       int
	CreatedAt time.Time
	UpdatedAt time.Time
	Posts     []Post
}

// Post is User's has-many association.
type Post struct {
	ID        uint
	UserID    uint `gorm:"index"`
	Title     string
	CreatedAt time.Time
}

// gormDB opens SQLite in memory (one connection) with the plugin over a
// memory region named "default", seeded with 100 users of 3 posts each;
// instrument, when not nil, is called on the region before the plugin is
// registered.
func gormDB(tb testing.TB, instrument func(*region.Region)) (*gorm.DB, *region.Region) {
	tb.Helper()
	sqlDB, err := sql.Open("sqlite3", ":memory:")
	if err != nil {
		tb.Fatal(err)
	}
	sqlDB.SetMaxOpenConns(1)
	sqlDB.SetConnMaxLifetime(0)
	tb.Cleanup(func() { _ = sqlDB.Close() })
	db, err := gorm.Open(sqlite.New(sqlite.Config{Conn: sqlDB}), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		tb.Fatal(err)
	}
	r := region.New(memory.New(), region.WithName("default"), region.WithExpiration(time.Hour))
	tb.Cleanup(func() { _ = r.Close() })
	if instrument != nil {
		instrument(r)
	}
	if err := db.Use(dogpile.New(map[string]*region.Region{"default": r})); err != nil {
		tb.Fatal(err)
	}
	if err := db.AutoMigrate(&User{}, &Post{}); err != nil {
		tb.Fatal(err)
	}
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	users := make([]User, 100)
	for i := range users {
		users[i] = User{Name: fmt.Sprint("user", i), Email: fmt.Sprintf("u%d@example.com", i), Age: 20 + i%40,
			CreatedAt: base.Add(time.Duration(i) * time.Hour), UpdatedAt: base}
		for j := range 3 {
			users[i].Posts = append(users[i].Posts, Post{Title: fmt.Sprint("post", j), CreatedAt: base})
		}
	}
	if err := db.Create(&users).Error; err != nil {
		tb.Fatal(err)
	}
	return db, r
}

// TestGORMQuery: queries through the plugin, the scope inline: one miss,
// then hits; a write invalidates the table. The metrics count them
// exactly, the creator run's span names the query's table.
func TestGORMQuery(t *testing.T) {
	tel := newTelemetry(t)
	db, _ := gormDB(t, func(r *region.Region) {
		inst, err := dogpileotel.Instrument(r, dogpileotel.WithMeterProvider(tel.mp), dogpileotel.WithTracerProvider(tel.tp))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = inst.Close() })
	})
	const hits = 4
	for i := range 1 + hits {
		var u User
		if err := db.Scopes(dogpile.FromCache("default")).First(&u, 42).Error; err != nil || u.ID != 42 {
			t.Fatalf("query %d: %v, %+v", i, err, u)
		}
	}
	if err := db.Model(&User{}).Where("id = ?", 42).Update("name", "renamed").Error; err != nil {
		t.Fatal(err)
	}
	var u User
	if err := db.Scopes(dogpile.FromCache("default")).First(&u, 42).Error; err != nil || u.Name != "renamed" {
		t.Fatalf("after the write: %v, %+v", err, u)
	}
	p := tel.metrics(t)
	for k, want := range map[string]float64{
		"dogpile.region.hits":          hits,
		"dogpile.region.misses":        2,
		"dogpile.region.regenerations": 2,
		"dogpile.region.regeneration.duration.count{dogpile.region=default,outcome=ok}": 2,
	} {
		if k[len(k)-1] != '}' {
			k += "{dogpile.region=default}"
		}
		if p[k] != want {
			t.Fatalf("%s = %v, want %v", k, p[k], want)
		}
	}
	if v := p["dogpile.region.invalidations{dogpile.region=default}"]; v < 1 {
		t.Fatalf("the write sent %v invalidations", v)
	}
	spans := tel.spans.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want one per creator run (2)", len(spans))
	}
	for _, s := range spans {
		a := spanAttrs(s.Attributes)
		if got := fmt.Sprint(a["dogpile.tables"].AsStringSlice()); s.Name != "dogpile.regenerate" || got != "[users]" {
			t.Fatalf("span %q with tables %s, want dogpile.regenerate of [users]", s.Name, got)
		}
	}
}
