package dogpile_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

func TestMain(m *testing.M) {
	code := testharness.Main(m)
	if r := dbtest.ForceReport(); r != "" {
		fmt.Println(r)
	}
	os.Exit(code)
}

type SmokeUser struct {
	ID        uint
	Name      string
	Age       int
	CreatedAt time.Time
}

func TestSmoke(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		r := region.New(memory.New(), region.WithExpiration(time.Minute))
		dbtest.Must(t, db.Use(dogpile.New(map[string]*region.Region{"default": r})))
		dbtest.Must(t, db.AutoMigrate(&SmokeUser{}))
		dbtest.Must(t, db.Create(&[]SmokeUser{{Name: "a", Age: 30}, {Name: "b", Age: 40}}).Error)
		db.Pool.Reset()
		for i := 0; i < 3; i++ {
			var users []SmokeUser
			dbtest.Must(t, db.Scopes(dogpile.FromCache("default")).Where("age > ?", 20).Order("id").Find(&users).Error)
			if len(users) != 2 || users[1].Name != "b" {
				t.Fatalf("got %+v", users)
			}
		}
		if q := db.Pool.Queries(); q != 1 {
			t.Fatalf("3 cached finds made %d queries; want 1", q)
		}
		dbtest.Must(t, db.Model(&SmokeUser{}).Where("name = ?", "b").Update("name", "bb").Error)
		var users []SmokeUser
		dbtest.Must(t, db.Scopes(dogpile.FromCache("default")).Where("age > ?", 20).Order("id").Find(&users).Error)
		if users[1].Name != "bb" {
			t.Fatalf("stale after update: %+v", users)
		}
		var u SmokeUser
		err := db.Scopes(dogpile.FromCache("default")).First(&u, 999).Error
		err2 := db.Scopes(dogpile.FromCache("default")).First(&u, 999).Error
		if err != err2 || err == nil {
			t.Fatalf("not found: %v / %v", err, err2)
		}
		t.Logf("stats %+v", r.Stats())
	})
}
