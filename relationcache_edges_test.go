package dogpile_test

// Edge cases of RelationshipCache found in review: destinations of every
// shape, duplicate and zero-key parents, has-one with several children,
// hooks that change children, composite keys, nested preloads made inside
// a custom preload function, children GORM cannot assign. Each case runs
// without the plugin, then through RelationshipCache as a miss and three
// hits, scribbling over every answer, and compares value by value.

import (
	"fmt"
	"reflect"
	"sync"
	"testing"

	"gorm.io/gorm"

	"github.com/dogpile-go/dogpile/internal/dbtest"
)

type edgeCase struct {
	name  string
	paths []string
	run   func(tx *gorm.DB) (any, error)
}

func edgeParity(t *testing.T, e *rcEnv, cases []edgeCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want, wantErr := c.run(e.bare())
			for _, what := range []string{"miss", "hit", "second hit", "third hit"} {
				tx := e.cached
				for _, p := range c.paths {
					tx = tx.Scopes(rcRC(p))
				}
				before := e.regions["default"].Stats().Hits
				got, err := c.run(tx)
				if what != "miss" && wantErr == nil && e.regions["default"].Stats().Hits == before {
					t.Errorf("%s: no region hit: the cache was not used", what)
				}
				if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
					t.Fatalf("%s: error %v; GORM's is %v", what, err, wantErr)
				}
				if err == nil {
					rcSame(t, what, want, got)
					scribble(reflect.ValueOf(got))
				}
			}
		})
	}
}

func TestRcEdges(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		e := rcSetup(t, db)
		// A second profile for user 1: has-one with several children.
		dbtest.Must(t, e.bare().Create(&RcProfile{RcUserID: 1, Bio: "second"}).Error)
		cases := []edgeCase{
			{"slice", []string{"Posts"}, func(tx *gorm.DB) (any, error) {
				var us []RcUser
				err := tx.Preload("Posts", rcByID).Order("id").Find(&us).Error
				return &us, err
			}},
			{"ptr-slice", []string{"Posts", "Profile", "Todos"}, func(tx *gorm.DB) (any, error) {
				var us []*RcUser
				err := tx.Preload("Posts", rcByID).Preload("Profile", rcByID).Preload("Todos").Order("id").Find(&us).Error
				return &us, err
			}},
			{"struct-first", []string{"Posts", "Profile"}, func(tx *gorm.DB) (any, error) {
				var u RcUser
				err := tx.Preload("Posts", rcByID).Preload("Profile", rcByID).First(&u, 3).Error
				return &u, err
			}},
			{"array", []string{"Posts"}, func(tx *gorm.DB) (any, error) {
				var us [4]RcUser
				err := tx.Preload("Posts", rcByID).Order("id").Find(&us).Error
				return &us, err
			}},
			{"ptr-to-slice", []string{"Posts"}, func(tx *gorm.DB) (any, error) {
				us := &[]RcUser{}
				err := tx.Preload("Posts", rcByID).Order("id").Find(&us).Error
				return us, err
			}},
			{"alt-shapes", []string{"Posts", "Profile"}, func(tx *gorm.DB) (any, error) {
				var us []RcUserAlt
				err := tx.Preload("Posts", rcByID).Preload("Profile", rcByID).Order("id").Find(&us).Error
				return &us, err
			}},
			{"alt-shapes-doubled", []string{"Posts", "Profile"}, func(tx *gorm.DB) (any, error) {
				var us []RcUserAlt
				err := tx.Table(rcDoubledUsers).Preload("Posts", rcByID).Preload("Profile", rcByID).Order("id").Find(&us).Error
				return &us, err
			}},
			{"doubled-ptrs", []string{"Posts", "Profile"}, func(tx *gorm.DB) (any, error) {
				var us []*RcUser
				err := tx.Table(rcDoubledUsers).Preload("Posts", rcByID).Preload("Profile", rcByID).Order("id").Find(&us).Error
				return &us, err
			}},
			{"zero-key-parents", []string{"Posts"}, func(tx *gorm.DB) (any, error) {
				var us []RcUser
				err := tx.Table("(SELECT id, name, created_at FROM rc_users UNION ALL SELECT 0, 'zero', created_at FROM rc_users WHERE id < 3) AS rc_users").
					Preload("Posts", rcByID).Order("id").Find(&us).Error
				return &us, err
			}},
			{"order-desc-and-cond", []string{"Posts"}, func(tx *gorm.DB) (any, error) {
				var us []RcUser
				err := tx.Preload("Posts", func(db *gorm.DB) *gorm.DB {
					return db.Where("published = ?", true).Order("id DESC")
				}).Order("id").Find(&us).Error
				return &us, err
			}},
			{"inline-cond", []string{"Posts"}, func(tx *gorm.DB) (any, error) {
				var us []RcUser
				err := tx.Preload("Posts", "title LIKE ?", "%p1").Order("id").Find(&us).Error
				return &us, err
			}},
			{"has-one-last-wins-desc", []string{"Profile"}, func(tx *gorm.DB) (any, error) {
				var us []RcUser
				err := tx.Preload("Profile", func(db *gorm.DB) *gorm.DB { return db.Order("id DESC") }).Order("id").Find(&us).Error
				return &us, err
			}},
			{"select-without-fk", []string{"Posts"}, func(tx *gorm.DB) (any, error) {
				var us []RcUser
				err := tx.Preload("Posts", func(db *gorm.DB) *gorm.DB { return db.Select("id", "title").Order("id") }).Order("id").Find(&us).Error
				return &us, err
			}},
			{"model-differs", []string{"Posts"}, func(tx *gorm.DB) (any, error) {
				var us []RcUserAlt
				err := tx.Model(&RcUser{}).Preload("Posts", rcByID).Order("id").Find(&us).Error
				return &us, err
			}},
		}
		edgeParity(t, e, cases)
	})
}

type EdgeParent struct {
	ID   uint
	Name string
	Kids []EdgeKid
	Pets []*EdgePet
	Toy  *EdgeToy
}

type EdgeKid struct {
	ID           uint
	EdgeParentID uint
	Name         string
	Body         []byte
	Tags         []string `gorm:"serializer:json"`
	P            *int
	DeletedAt    gorm.DeletedAt
}

// EdgePet's AfterFind changes a non-key field: it must run on every answer.
type EdgePet struct {
	ID           uint
	EdgeParentID uint
	Name         string
	Seen         []string `gorm:"serializer:json"`
}

func (p *EdgePet) AfterFind(*gorm.DB) error {
	p.Name += "!"
	p.Seen = append(p.Seen, "hook")
	return nil
}

// EdgeToy's AfterFind moves toys of even parents to parent 1 (has-one).
type EdgeToy struct {
	ID           uint
	EdgeParentID uint
	Name         string
}

func (p *EdgeToy) AfterFind(*gorm.DB) error {
	if p.EdgeParentID%2 == 0 {
		p.EdgeParentID = 1
	}
	return nil
}

type EdgeCParent struct {
	A    int    `gorm:"primaryKey;autoIncrement:false"`
	B    string `gorm:"primaryKey"`
	Name string
	Kids []EdgeCKid `gorm:"foreignKey:PA,PB;references:A,B"`
	One  *EdgeCOne  `gorm:"foreignKey:PA,PB;references:A,B"`
}

type EdgeCKid struct {
	ID uint
	PA int
	PB string
	V  string
}

type EdgeCOne struct {
	ID uint
	PA int
	PB string
	V  string
}

func edgeSeed(t *testing.T, db *gorm.DB) {
	t.Helper()
	dbtest.Must(t, db.AutoMigrate(&EdgeParent{}, &EdgeKid{}, &EdgePet{}, &EdgeToy{}, &EdgeCParent{}, &EdgeCKid{}, &EdgeCOne{}))
	for i := 1; i <= 6; i++ {
		p := EdgeParent{Name: fmt.Sprintf("p%d", i)}
		dbtest.Must(t, db.Create(&p).Error)
		for j := 0; j < i%3+1; j++ {
			k := EdgeKid{EdgeParentID: p.ID, Name: fmt.Sprintf("k%d-%d", i, j), Body: []byte{byte(i), byte(j)}, Tags: []string{"a"}, P: shInt(j)}
			dbtest.Must(t, db.Create(&k).Error)
			if j == 1 {
				dbtest.Must(t, db.Delete(&k).Error) // soft-deleted
			}
			dbtest.Must(t, db.Create(&EdgePet{EdgeParentID: p.ID, Name: fmt.Sprintf("pet%d-%d", i, j), Seen: []string{"s"}}).Error)
		}
		dbtest.Must(t, db.Create(&EdgeToy{EdgeParentID: p.ID, Name: fmt.Sprintf("toy%d", i)}).Error)
		for _, b := range []string{"x", "y"} {
			dbtest.Must(t, db.Create(&EdgeCParent{A: i, B: b, Name: fmt.Sprintf("c%d%s", i, b)}).Error)
			for j := 0; j < i%2+1; j++ {
				dbtest.Must(t, db.Create(&EdgeCKid{PA: i, PB: b, V: fmt.Sprintf("v%d%s%d", i, b, j)}).Error)
				dbtest.Must(t, db.Create(&EdgeCOne{PA: i, PB: b, V: fmt.Sprintf("o%d%s%d", i, b, j)}).Error)
			}
		}
	}
}

func TestRcEdgesMore(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		e := rcSetup(t, db)
		edgeSeed(t, e.bare())
		byID := func(db *gorm.DB) *gorm.DB { return db.Order("id") }
		cases := []edgeCase{
			{"kids", []string{"Kids", "Pets", "Toy"}, func(tx *gorm.DB) (any, error) {
				var ps []EdgeParent
				err := tx.Preload("Kids", byID).Preload("Pets", byID).Preload("Toy", byID).Order("id").Find(&ps).Error
				return &ps, err
			}},
			{"kids-unscoped", []string{"Kids"}, func(tx *gorm.DB) (any, error) {
				var ps []EdgeParent
				err := tx.Unscoped().Preload("Kids", byID).Order("id").Find(&ps).Error
				return &ps, err
			}},
			{"kids-first", []string{"Kids", "Pets", "Toy"}, func(tx *gorm.DB) (any, error) {
				var p EdgeParent
				err := tx.Preload("Kids", byID).Preload("Pets", byID).Preload("Toy", byID).First(&p, 2).Error
				return &p, err
			}},
			{"composite", []string{"Kids", "One"}, func(tx *gorm.DB) (any, error) {
				var ps []EdgeCParent
				err := tx.Preload("Kids", byID).Preload("One", byID).Order("a, b").Find(&ps).Error
				return &ps, err
			}},
			{"composite-ptrs", []string{"Kids", "One"}, func(tx *gorm.DB) (any, error) {
				var ps []*EdgeCParent
				err := tx.Preload("Kids", byID).Preload("One", byID).Order("a, b").Find(&ps).Error
				return &ps, err
			}},
		}
		edgeParity(t, e, cases)
	})
}

// TestRcEdgesWindowsIndependent: appending to, or writing through, one
// parent's children never shows in another parent's or a later answer.
func TestRcEdgesWindowsIndependent(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		e := rcSetup(t, db)
		edgeSeed(t, e.bare())
		load := func(tx *gorm.DB) []EdgeParent {
			var ps []EdgeParent
			dbtest.Must(t, tx.Preload("Kids", func(db *gorm.DB) *gorm.DB { return db.Order("id") }).Order("id").Find(&ps).Error)
			return ps
		}
		want := load(e.bare())
		for round := range 3 {
			got := load(e.cached.Scopes(rcRC("Kids")))
			rcSame(t, fmt.Sprintf("round %d", round), want, got)
			for i := range got {
				got[i].Kids = append(got[i].Kids, EdgeKid{Name: "appended"})
				if len(got[i].Kids) > 1 {
					got[i].Kids[0].Body[0] = 0xFF
					got[i].Kids[0].Tags[0] = "changed"
					*got[i].Kids[0].P = 99
				}
			}
			for i := range got {
				if n := len(got[i].Kids); n != len(want[i].Kids)+1 {
					t.Fatalf("round %d: parent %d has %d kids after one append; want %d", round, i, n, len(want[i].Kids)+1)
				}
			}
		}
	})
}

// TestRcEdgesConcurrent: overlapping preloads from many goroutines, each
// writing over everything it gets, under -race.
func TestRcEdgesConcurrent(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		e := rcSetup(t, db)
		edgeSeed(t, e.bare())
		sqlDB, err := e.cached.DB()
		dbtest.Must(t, err)
		sqlDB.SetMaxOpenConns(4)
		type shape struct {
			from, to int
			ptrs     bool
		}
		load := func(tx *gorm.DB, s shape) (any, error) {
			q := tx.Preload("Kids", func(db *gorm.DB) *gorm.DB { return db.Order("id") }).Preload("Pets").Where("id BETWEEN ? AND ?", s.from, s.to).Order("id")
			if s.ptrs {
				var ps []*EdgeParent
				err := q.Find(&ps).Error
				return &ps, err
			}
			var ps []EdgeParent
			err := q.Find(&ps).Error
			return &ps, err
		}
		var shapes []shape
		for from := 1; from <= 4; from++ {
			for _, ptrs := range []bool{false, true} {
				shapes = append(shapes, shape{from, from + 2, ptrs})
			}
		}
		wants := make([]any, len(shapes))
		for i, s := range shapes {
			w, err := load(e.bare(), s)
			dbtest.Must(t, err)
			wants[i] = w
		}
		var wg sync.WaitGroup
		errs := make(chan string, 64)
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 30 {
					si := (g + i) % len(shapes)
					got, err := load(e.cached.Scopes(rcRC("Kids"), rcRC("Pets")), shapes[si])
					if err != nil {
						errs <- err.Error()
						return
					}
					if !reflect.DeepEqual(wants[si], got) {
						errs <- fmt.Sprintf("goroutine %d run %d shape %+v: answer differs", g, i, shapes[si])
						return
					}
					scribble(reflect.ValueOf(got))
					scribbleInPlace(reflect.ValueOf(got))
				}
			}()
		}
		wg.Wait()
		close(errs)
		for m := range errs {
			t.Error(m)
		}
	})
}

func TestRcEdgesNestedThroughFunction(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		e := rcSetup(t, db)
		cases := []edgeCase{
			{"nested-fn", []string{"Posts"}, func(tx *gorm.DB) (any, error) {
				var us []RcUser
				err := tx.Preload("Posts", func(db *gorm.DB) *gorm.DB { return db.Preload("Comments", rcByID).Order("id") }).Order("id").Find(&us).Error
				return &us, err
			}},
			{"nested-fn-both-cached", []string{"Posts", "Posts.Comments"}, func(tx *gorm.DB) (any, error) {
				var us []RcUser
				err := tx.Preload("Posts", func(db *gorm.DB) *gorm.DB { return db.Preload("Comments", rcByID).Order("id") }).Order("id").Find(&us).Error
				return &us, err
			}},
			{"nested-fn-doubled", []string{"Posts", "Posts.Comments"}, func(tx *gorm.DB) (any, error) {
				var us []RcUser
				err := tx.Table(rcDoubledUsers).Preload("Posts", func(db *gorm.DB) *gorm.DB { return db.Preload("Comments", rcByID).Order("id") }).Order("id").Find(&us).Error
				return &us, err
			}},
			{"joins-in-child", []string{"Posts"}, func(tx *gorm.DB) (any, error) {
				var us []RcUser
				err := tx.Preload("Posts", func(db *gorm.DB) *gorm.DB { return db.Joins("RcUser").Order("rc_posts.id") }).Order("id").Find(&us).Error
				return &us, err
			}},
		}
		edgeParity(t, e, cases)
	})
}

func TestRcEdgesPrefilled(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		e := rcSetup(t, db)
		stale := func() []RcPost { return []RcPost{{ID: 999, Title: "stale"}} }
		cases := []edgeCase{
			{"struct-with-children", []string{"Posts", "Profile"}, func(tx *gorm.DB) (any, error) {
				u := RcUser{Posts: stale(), Profile: &RcProfile{ID: 999}}
				err := tx.Preload("Posts", rcByID).Preload("Profile").First(&u, 2).Error
				return &u, err
			}},
			{"slice-with-capacity", []string{"Posts"}, func(tx *gorm.DB) (any, error) {
				us := make([]RcUser, 3, 30)
				for i := range us {
					us[i].Posts = stale()
				}
				err := tx.Preload("Posts", rcByID).Order("id").Find(&us).Error
				return &us, err
			}},
			{"array-of-ptrs", []string{"Posts"}, func(tx *gorm.DB) (any, error) {
				var us [3]*RcUser
				err := tx.Preload("Posts", rcByID).Order("id").Find(&us).Error
				return &us, err
			}},
			{"ptr-ptr-struct", []string{"Posts"}, func(tx *gorm.DB) (any, error) {
				var u *RcUser
				err := tx.Preload("Posts", rcByID).First(&u, 3).Error
				return &u, err
			}},
		}
		edgeParity(t, e, cases)
	})
}
