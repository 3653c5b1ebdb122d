package dogpile_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/region"
)

// scribble changes, in place, every value reachable from v that a caller
// could change in an answer it was given: strings, numbers, bools, times,
// bytes, through pointers, slices, arrays, maps and structs. A later hit
// that shows any of it shares memory with an earlier caller's answer.
func scribble(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			scribble(v.Elem())
		}
		return
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			scribble(v.Index(i))
		}
		return
	case reflect.Map:
		it := v.MapRange()
		for it.Next() {
			x := reflect.New(it.Value().Type()).Elem()
			x.Set(it.Value())
			if x.Kind() == reflect.Interface && !x.IsNil() {
				// The dynamic value is not addressable: scribble a copy.
				c := reflect.New(x.Elem().Type()).Elem()
				c.Set(x.Elem())
				scribble(c)
				x.Set(c)
			} else {
				scribble(x)
			}
			v.SetMapIndex(it.Key(), x)
		}
		return
	}
	if !v.CanSet() {
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(v.String() + "~scribbled")
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(v.Int() ^ 0x55)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(v.Uint() ^ 0x55)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(v.Float() + 1.5)
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Struct:
		if t, ok := v.Interface().(time.Time); ok {
			v.Set(reflect.ValueOf(t.Add(time.Hour)))
			return
		}
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				scribble(v.Field(i))
			}
		}
	}
}

func TestDecodedCacheOff(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		r := region.New(memory.New(), region.WithExpiration(time.Hour))
		dbtest.Must(t, db.Use(dogpile.New(map[string]*region.Region{"default": r}, dogpile.WithDecodedCache(0))))
		type memoOffItem struct {
			ID   uint
			Name string
		}
		dbtest.Must(t, db.AutoMigrate(&memoOffItem{}))
		dbtest.Must(t, db.Create(&[]memoOffItem{{Name: "a"}, {Name: "b"}}).Error)
		for i := range 3 {
			var got []memoOffItem
			dbtest.Must(t, db.Scopes(dogpile.FromCache("default")).Order("id").Find(&got).Error)
			if len(got) != 2 || got[0].Name != "a" || got[1].Name != "b" {
				t.Fatalf("run %d: %+v", i, got)
			}
			got[0].Name = "scribbled"
		}
		if s := r.Stats(); s.Hits != 2 || s.Misses != 1 {
			t.Fatalf("stats %+v; want 1 miss, 2 hits", s)
		}
	})
}
