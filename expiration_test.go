package dogpile_test

// dogpile.WithExpiration(d) with d <= 0 means "never expire", as
// region.WithExpiration(0) and region.NeverExpire do.

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/region"
)

type expUser struct {
	ID    uint
	Name  string
	Posts []expPost `gorm:"foreignKey:UserID"`
}

type expPost struct {
	ID     uint
	UserID uint
	Title  string
}

func TestWithExpirationZeroNeverExpires(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		// Time moves by a minute between calls: an entry that expires
		// after zero (or less) is stale at the next call, unless it never
		// expires.
		var mu sync.Mutex
		now := time.Now()
		clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		tick := func() { mu.Lock(); defer mu.Unlock(); now = now.Add(time.Minute) }
		r := region.New(memory.New(), region.WithExpiration(time.Hour), region.WithClock(clock))
		dbtest.Must(t, db.Use(dogpile.New(map[string]*region.Region{"default": r})))
		dbtest.Must(t, db.AutoMigrate(&expUser{}, &expPost{}))
		dbtest.Must(t, db.Create(&expUser{Name: "u", Posts: []expPost{{Title: "p"}}}).Error)

		for _, d := range []time.Duration{0, -time.Second, region.NeverExpire} {
			t.Run(fmt.Sprint(d), func(t *testing.T) {
				// Per-parent entries are shared between queries: start cold.
				dbtest.Must(t, dogpile.InvalidateTables(db.DB, "exp_users", "exp_posts"))
				db.Pool.Reset()
				for i := 0; i < 3; i++ {
					tick()
					var us []expUser
					dbtest.Must(t, db.Scopes(dogpile.FromCache("default", dogpile.WithExpiration(d))).
						Where("id > ?", int(d)).Find(&us).Error) // a key of its own per d
					if len(us) != 1 {
						t.Fatalf("got %+v", us)
					}
				}
				if n := db.Pool.Queries(); n != 1 {
					t.Errorf("FromCache with WithExpiration(%v) three times: %d queries; want 1 (the entry never expires)", d, n)
				}

				db.Pool.Reset()
				for i := 0; i < 3; i++ {
					tick()
					var us []expUser
					dbtest.Must(t, db.Scopes(
						dogpile.FromCache("default", dogpile.WithExpiration(d)),
						dogpile.RelationshipCache("Posts", "default", dogpile.WithExpiration(d)),
					).Preload("Posts").Where("id >= ?", int(d)).Find(&us).Error)
					if len(us) != 1 || len(us[0].Posts) != 1 {
						t.Fatalf("got %+v", us)
					}
				}
				if n := db.Pool.Queries(); n != 2 {
					t.Errorf("FromCache and RelationshipCache with WithExpiration(%v) three times: %d queries; want 2 (the parents once, the posts once)", d, n)
				}
			})
		}
	})
}
