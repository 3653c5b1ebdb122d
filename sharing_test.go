package dogpile_test

// Answers are their callers' own: whatever a caller (or its AfterFind hooks)
// does to its answer never shows in another caller's answer or in a later
// hit, whether the hit was decoded, copied from the decoded-answer memo, or
// made by a query another caller waited on. Each test scribbles over every
// answer it gets and compares the next one with uncached GORM, value by
// value; run under -race, they also catch two callers touching one value.

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/region"
)

// ---------------------------------------------------------------------------
// A model holding every kind of reference an answer can hold.

type ShInner struct {
	Name string
	P    *int
	Sub  []string
	M    map[string][]int
	Arr  [2]*int
	Kids []ShInner // recursive
}

type ShEmbedded struct {
	EmbTags []string `gorm:"serializer:json"`
	EmbP    *int
}

type ShRow struct {
	ID      uint
	Name    string
	Ptr     *string
	Blob    []byte
	Raw     json.RawMessage
	NS      sql.NullString
	Deleted gorm.DeletedAt
	At      time.Time
	Tags    []string             `gorm:"serializer:json"`
	Meta    map[string][]string  `gorm:"serializer:json"`
	Items   []ShInner            `gorm:"serializer:json"`
	PItems  []*ShInner           `gorm:"serializer:json"`
	Arr     [2][]string          `gorm:"serializer:json"`
	ByKey   map[string]*ShInner  `gorm:"serializer:json"`
	Nested  map[string][]ShInner `gorm:"serializer:json"`
	ShEmbedded
}

func shInt(n int) *int { return &n }

func shSeedRows(t *testing.T, db *gorm.DB) {
	t.Helper()
	dbtest.Must(t, db.AutoMigrate(&ShRow{}))
	for i := 1; i <= 3; i++ {
		s := fmt.Sprintf("ptr%d", i)
		in := ShInner{Name: "in", P: shInt(i), Sub: []string{"a", "b"}, M: map[string][]int{"k": {1, 2}},
			Arr: [2]*int{shInt(1), nil}, Kids: []ShInner{{Name: "kid", P: shInt(7), Sub: []string{"x"}}}}
		dbtest.Must(t, db.Create(&ShRow{
			Name: fmt.Sprintf("row%d", i), Ptr: &s, Blob: []byte{1, 2, byte(i)}, Raw: json.RawMessage(`{"a":1}`),
			NS: sql.NullString{String: "ns", Valid: true}, At: time.Date(2024, 1, i, 0, 0, 0, 0, time.UTC),
			Tags: []string{"t1", "t2"}, Meta: map[string][]string{"m": {"v1", "v2"}},
			Items: []ShInner{in}, PItems: []*ShInner{&in, nil}, Arr: [2][]string{{"p"}, {"q"}},
			ByKey: map[string]*ShInner{"x": &in}, Nested: map[string][]ShInner{"n": {in}},
			ShEmbedded: ShEmbedded{EmbTags: []string{"e"}, EmbP: shInt(5)},
		}).Error)
	}
}

// shOpen opens a second *gorm.DB over conn, of db's dialect, with the
// plugin and one "default" region.
func shOpen(t *testing.T, db *dbtest.DB, conn gorm.ConnPool) (*gorm.DB, *region.Region) {
	t.Helper()
	var dialector gorm.Dialector
	switch db.Dialect {
	case "sqlite":
		dialector = sqlite.New(sqlite.Config{Conn: conn})
	case "postgres":
		dialector = postgres.New(postgres.Config{Conn: conn})
	default:
		t.Fatalf("dialect %q", db.Dialect)
	}
	cached, err := gorm.Open(dialector, &gorm.Config{Logger: logger.Discard})
	dbtest.Must(t, err)
	r := region.New(memory.New(), region.WithExpiration(time.Hour), region.WithName("default"))
	dbtest.Must(t, cached.Use(dogpile.New(map[string]*region.Region{"default": r})))
	return cached, r
}

// scribbleInPlace writes into what scribble cannot reach by setting: the
// bytes of byte slices and the elements of slices held in maps.
func scribbleInPlace(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			scribbleInPlace(v.Elem())
		}
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			for i := 0; i < v.Len(); i++ {
				v.Index(i).SetUint(0xEE)
			}
			return
		}
		for i := 0; i < v.Len(); i++ {
			scribbleInPlace(v.Index(i))
		}
	case reflect.Array:
		for i := 0; i < v.Len(); i++ {
			scribbleInPlace(v.Index(i))
		}
	case reflect.Map:
		it := v.MapRange()
		for it.Next() {
			x := it.Value()
			if x.Kind() == reflect.Slice || (x.Kind() == reflect.Pointer && !x.IsNil()) {
				scribbleInPlace(x)
			}
		}
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			return
		}
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				scribbleInPlace(v.Field(i))
			}
		}
	case reflect.String:
		if v.CanSet() {
			v.SetString(v.String() + "#")
		}
	}
}

func scribbleAll(v any) {
	scribble(reflect.ValueOf(v))
	scribbleInPlace(reflect.ValueOf(v))
}

// TestSharingMemoHits: hits of every destination shape, after every earlier
// answer was scribbled over, still equal GORM's answer.
func TestSharingMemoHits(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		shSeedRows(t, db.DB)
		cached, r := shOpen(t, db, db.Pool)
		runs := []struct {
			name string
			run  func(tx *gorm.DB) (any, error)
		}{
			{"slice", func(tx *gorm.DB) (any, error) {
				var v []ShRow
				err := tx.Order("id").Find(&v).Error
				return &v, err
			}},
			{"ptr-slice", func(tx *gorm.DB) (any, error) {
				var v []*ShRow
				err := tx.Order("id").Find(&v).Error
				return &v, err
			}},
			{"struct", func(tx *gorm.DB) (any, error) {
				var v ShRow
				err := tx.First(&v, 2).Error
				return &v, err
			}},
			{"array", func(tx *gorm.DB) (any, error) {
				var v [2]ShRow
				err := tx.Order("id").Find(&v).Error
				return &v, err
			}},
		}
		for _, c := range runs {
			t.Run(c.name, func(t *testing.T) {
				want, err := c.run(db.DB)
				dbtest.Must(t, err)
				hits := r.Stats().Hits
				for i := range 4 {
					got, err := c.run(cached.Scopes(dogpile.FromCache("default")))
					dbtest.Must(t, err)
					rcSame(t, fmt.Sprintf("run %d", i), want, got)
					scribbleAll(got)
				}
				if n := r.Stats().Hits - hits; n != 3 {
					t.Errorf("%d hits in 4 runs; want 3", n)
				}
			})
		}
	})
}

// TestSharingMemoConcurrent: goroutines hit one key at once and scribble
// over what they get.
func TestSharingMemoConcurrent(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		shSeedRows(t, db.DB)
		cached, _ := shOpen(t, db, db.Pool)
		var want []ShRow
		dbtest.Must(t, db.Order("id").Find(&want).Error)
		var wg sync.WaitGroup
		errs := make(chan string, 8)
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 40 {
					var got []ShRow
					if err := cached.Scopes(dogpile.FromCache("default")).Order("id").Find(&got).Error; err != nil {
						errs <- err.Error()
						return
					}
					if !reflect.DeepEqual(want, got) {
						errs <- fmt.Sprintf("goroutine %d run %d: answer differs from GORM's", g, i)
						return
					}
					scribbleAll(&got)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
	})
}

// ---------------------------------------------------------------------------
// Answers the region cannot store. Their bytes never exist, so the callers
// that waited for the query are all handed the value it made: each must get
// a copy of its own. (In use, the usual cause is a time in a zone other
// than UTC and Local; here a column type the codec refuses makes it certain
// on every dialect.)

// shUnencodable is a text column the cache's codec refuses to encode.
type shUnencodable string

func (shUnencodable) EncodeMsgpack(*msgpack.Encoder) error { return errors.New("not for the cache") }
func (*shUnencodable) DecodeMsgpack(*msgpack.Decoder) error {
	return errors.New("not for the cache")
}

// shOpaque is a column the plugin can neither encode nor copy: it holds a
// reference in an unexported field.
type shOpaque struct{ b []byte }

func (o *shOpaque) Scan(v any) error {
	switch x := v.(type) {
	case string:
		o.b = []byte(x)
	case []byte:
		o.b = append([]byte(nil), x...)
	default:
		return fmt.Errorf("shOpaque: cannot scan %T", v)
	}
	return nil
}

func (o shOpaque) Value() (driver.Value, error)        { return string(o.b), nil }
func (shOpaque) EncodeMsgpack(*msgpack.Encoder) error  { return errors.New("not for the cache") }
func (*shOpaque) DecodeMsgpack(*msgpack.Decoder) error { return errors.New("not for the cache") }
func (shOpaque) GormDataType() string                  { return "text" }

type ShLoose struct {
	ID   uint
	Name string
	Blob []byte
	Tag  shUnencodable
}

// AfterFind runs once per answer: a value two callers shared would show it
// twice (and race).
func (l *ShLoose) AfterFind(*gorm.DB) error {
	l.Name += "!"
	return nil
}

type ShOpaqueRow struct {
	ID   uint
	Name string
	Data shOpaque
}

type ShLooseParent struct {
	ID   uint
	Name string
	Kids []ShLooseKid
}

type ShLooseKid struct {
	ID              uint
	ShLooseParentID uint
	Blob            []byte
	Tag             shUnencodable
}

// shGatePool holds the queries whose SQL contains match (every query when
// it is empty) until released, so that all callers of a test are waiting on
// one query before it answers.
type shGatePool struct {
	gorm.ConnPool
	match   string
	mu      sync.Mutex
	release chan struct{} // nil: queries pass
	entered chan struct{} // a send per held query
}

func (p *shGatePool) arm() {
	p.mu.Lock()
	p.release, p.entered = make(chan struct{}), make(chan struct{}, 64)
	p.mu.Unlock()
}

func (p *shGatePool) open() {
	p.mu.Lock()
	close(p.release)
	p.release = nil
	p.mu.Unlock()
}

func (p *shGatePool) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	p.mu.Lock()
	release, entered := p.release, p.entered
	p.mu.Unlock()
	if release != nil && strings.Contains(q, p.match) {
		entered <- struct{}{}
		<-release
	}
	return p.ConnPool.QueryContext(ctx, q, args...)
}

// shTogether runs n goroutines of q through cached, holding the database
// until all but the first wait on its query, and returns when all are done.
func shTogether(t *testing.T, r *region.Region, gate *shGatePool, n int, q func(i int)) {
	t.Helper()
	base := r.Stats().LockWaits
	gate.arm()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q(i)
		}()
	}
	invWait(t, gate.entered, "the leader's query")
	invWaitFor(t, fmt.Sprintf("%d waiters", n-1), func() bool { return r.Stats().LockWaits-base >= int64(n-1) },
		func() string { return fmt.Sprintf("stats %+v", r.Stats()) })
	gate.open()
	wg.Wait()
}

func TestSharingUnencodableFromCache(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		dbtest.Must(t, db.AutoMigrate(&ShLoose{}))
		dbtest.Must(t, db.Create(&[]ShLoose{{Name: "a", Blob: []byte{1}, Tag: "x"}, {Name: "b", Blob: []byte{2}, Tag: "y"}}).Error)
		var want []ShLoose
		dbtest.Must(t, db.Order("id").Find(&want).Error)
		gate := &shGatePool{ConnPool: db.Pool}
		cached, r := shOpen(t, db, gate)

		const n = 8
		got := make([][]ShLoose, n)
		db.Pool.Reset()
		shTogether(t, r, gate, n, func(i int) {
			dbtest.Must(t, cached.Scopes(dogpile.FromCache("default")).Order("id").Find(&got[i]).Error)
		})
		if q := db.Pool.Queries(); q != 1 {
			t.Errorf("%d callers of one cold query: %d queries; want 1", n, q)
		}
		if s := r.Stats(); s.NotStored != 1 {
			t.Errorf("NotStored = %d; want 1 (the answer cannot be encoded)", s.NotStored)
		}
		for i := range got {
			rcSame(t, fmt.Sprintf("caller %d", i), want, got[i]) // AfterFind ran once on each
		}
		got[0][0].Name, got[0][0].Blob[0] = "changed by caller 0", 0xEE
		for i := 1; i < n; i++ {
			if got[i][0].Name != "a!" || got[i][0].Blob[0] != 1 {
				t.Errorf("caller %d sees caller 0's change: %q %#x", i, got[i][0].Name, got[i][0].Blob)
			}
		}
	})
}

// TestSharingUnencodableUncopyable: an answer that can be neither encoded
// nor copied is never handed to two callers: those that waited for it run
// the query themselves.
func TestSharingUnencodableUncopyable(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		dbtest.Must(t, db.AutoMigrate(&ShOpaqueRow{}))
		dbtest.Must(t, db.Create(&ShOpaqueRow{Name: "a", Data: shOpaque{[]byte("data")}}).Error)
		gate := &shGatePool{ConnPool: db.Pool}
		cached, r := shOpen(t, db, gate)

		const n = 4
		got := make([][]ShOpaqueRow, n)
		db.Pool.Reset()
		shTogether(t, r, gate, n, func(i int) {
			dbtest.Must(t, cached.Scopes(dogpile.FromCache("default")).Find(&got[i]).Error)
		})
		if q := db.Pool.Queries(); q != n {
			t.Errorf("%d callers of an answer that cannot be shared: %d queries; want %d (one each)", n, q, n)
		}
		for i := range got {
			if len(got[i]) != 1 || string(got[i][0].Data.b) != "data" {
				t.Fatalf("caller %d: %+v", i, got[i])
			}
		}
		got[0][0].Data.b[0] = '!'
		for i := 1; i < n; i++ {
			if d := string(got[i][0].Data.b); d != "data" {
				t.Errorf("caller %d sees caller 0's change: %q", i, d)
			}
		}
	})
}

func TestSharingUnencodableRelationshipCache(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		dbtest.Must(t, db.AutoMigrate(&ShLooseParent{}, &ShLooseKid{}))
		p := ShLooseParent{Name: "p"}
		dbtest.Must(t, db.Create(&p).Error)
		for i := 1; i <= 2; i++ {
			dbtest.Must(t, db.Create(&ShLooseKid{ShLooseParentID: p.ID, Blob: []byte{byte(i)}, Tag: "t"}).Error)
		}
		// Only the preload is held: it is the query every caller waits on.
		gate := &shGatePool{ConnPool: db.Pool, match: "sh_loose_kids"}
		cached, r := shOpen(t, db, gate)
		load := func(tx *gorm.DB, dest *[]ShLooseParent) error {
			return tx.Preload("Kids", rcByID).Order("id").Find(dest).Error
		}
		var want []ShLooseParent
		dbtest.Must(t, load(db.DB, &want))

		const n = 8
		got := make([][]ShLooseParent, n)
		db.Pool.Reset()
		shTogether(t, r, gate, n, func(i int) {
			dbtest.Must(t, load(cached.Scopes(dogpile.RelationshipCache("Kids", "default")), &got[i]))
		})
		if q := db.Pool.Queries(); q != n+1 {
			t.Errorf("%d callers: %d queries; want %d (theirs for the parent, one preload)", n, q, n+1)
		}
		for i := range got {
			rcSame(t, fmt.Sprintf("caller %d", i), want, got[i])
		}
		got[0][0].Kids[0].Blob[0] = 0xEE
		for i := 1; i < n; i++ {
			if b := got[i][0].Kids[0].Blob[0]; b != 1 {
				t.Errorf("caller %d sees caller 0's change to a child's bytes: %#x", i, b)
			}
		}
	})
}
