package dogpile_test

// Configuration errors are errors at db.Use, never panics or silent
// misbehaviour later; RelationshipCache with an unknown region fails as
// FromCache does: the error, and no data.

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/region"
)

type cfgUser struct {
	ID    uint
	Name  string
	Posts []cfgPost `gorm:"foreignKey:UserID"`
}

type cfgPost struct {
	ID     uint
	UserID uint
	Title  string
}

func TestConfigErrorsAtUse(t *testing.T) {
	good := region.New(memory.New())
	one := map[string]*region.Region{"default": good}
	for _, tc := range []struct {
		name    string
		regions map[string]*region.Region
		mention string // what the error names
		opts    []dogpile.PluginOption
	}{
		{"NilMap", nil, "no regions", nil},
		{"EmptyMap", map[string]*region.Region{}, "no regions", nil},
		{"NilRegion", map[string]*region.Region{"default": good, "users": nil}, `"users"`, nil},
		{"EmptyName", map[string]*region.Region{"": good}, `""`, nil},
		{"TriggerWritesEmptyTable", one, "WithTriggerWrites", []dogpile.PluginOption{dogpile.WithTriggerWrites("", "audit")}},
		{"TriggerWritesEmptyWrite", one, `"orders"`, []dogpile.PluginOption{dogpile.WithTriggerWrites("orders", "audit", " ")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
				var p *dogpile.Plugin
				func() {
					defer func() {
						if r := recover(); r != nil {
							t.Fatalf("New panicked: %v", r)
						}
					}()
					p = dogpile.New(tc.regions, tc.opts...)
				}()
				err := db.Use(p)
				if !errors.Is(err, dogpile.ErrInvalidConfig) {
					t.Fatalf("db.Use = %v; want an error matching ErrInvalidConfig", err)
				}
				if !strings.Contains(err.Error(), tc.mention) {
					t.Errorf("db.Use = %q; want it to mention %s", err, tc.mention)
				}
				// The plugin is not registered: the database works without it.
				dbtest.Must(t, db.AutoMigrate(&cfgUser{}))
				dbtest.Must(t, db.Create(&cfgUser{Name: "u"}).Error)
				var n int64
				dbtest.Must(t, db.Model(&cfgUser{}).Count(&n).Error)
				if n != 1 {
					t.Errorf("count without the plugin = %d", n)
				}
			})
		})
	}
}

func TestConfigRelationshipCacheUnknownRegion(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		r := region.New(memory.New(), region.WithExpiration(time.Hour))
		dbtest.Must(t, db.Use(dogpile.New(map[string]*region.Region{"default": r})))
		dbtest.Must(t, db.AutoMigrate(&cfgUser{}, &cfgPost{}))
		dbtest.Must(t, db.Create(&cfgUser{Name: "u", Posts: []cfgPost{{Title: "p"}}}).Error)

		db.Pool.Reset()
		var viaFromCache []cfgUser
		errFC := db.Scopes(dogpile.FromCache("nope")).Preload("Posts").Find(&viaFromCache).Error
		if !errors.Is(errFC, dogpile.ErrUnknownRegion) || len(viaFromCache) != 0 || db.Pool.Queries() != 0 {
			t.Fatalf("test bug: FromCache(unknown) = %v, %d users, %d queries", errFC, len(viaFromCache), db.Pool.Queries())
		}

		db.Pool.Reset()
		var users []cfgUser
		err := db.Scopes(dogpile.RelationshipCache("Posts", "nope")).Preload("Posts").Find(&users).Error
		if !errors.Is(err, dogpile.ErrUnknownRegion) {
			t.Errorf("RelationshipCache(unknown region) = %v; want ErrUnknownRegion", err)
		}
		if len(users) != 0 || db.Pool.Queries() != 0 {
			t.Errorf("RelationshipCache(unknown region) loaded %d users in %d queries; want none, as FromCache(unknown region)", len(users), db.Pool.Queries())
		}
		if err != nil && !strings.Contains(err.Error(), `"nope"`) {
			t.Errorf("error %q does not name the region", err)
		}
	})
}

// A region-scoped invalidation (InvalidateKey) reaches the region
// registered under the name it gives, whatever name the region was made
// with (region.WithName, "default" without it).
func TestConfigInvalidateKeyByRegisteredName(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		r := region.New(memory.New(), region.WithExpiration(time.Hour)) // named "default"
		dbtest.Must(t, db.Use(dogpile.New(map[string]*region.Region{"users": r})))
		dbtest.Must(t, db.AutoMigrate(&cfgUser{}))
		dbtest.Must(t, db.Create(&cfgUser{Name: "before"}).Error)
		read := func() string {
			var u cfgUser
			dbtest.Must(t, db.Scopes(dogpile.FromCache("users", dogpile.WithKey("one-user"))).First(&u).Error)
			return u.Name
		}
		if got := read(); got != "before" {
			t.Fatalf("first read: %q", got)
		}
		// A write behind the plugin's back, then the invalidation of the key.
		_, err := db.Pool.DB.Exec("UPDATE cfg_users SET name = 'after'")
		dbtest.Must(t, err)
		dbtest.Must(t, dogpile.InvalidateKey(db.DB, "users", "one-user"))
		if got := read(); got != "after" {
			t.Errorf("after InvalidateKey(users, one-user): %q; want %q (the entry of the region registered as users)", got, "after")
		}
	})
}
