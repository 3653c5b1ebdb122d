package answer

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"
)

type mcLeaf struct {
	N    int
	Tags []string
	Raw  json.RawMessage
	NS   sql.NullString
	Del  gorm.DeletedAt
	At   time.Time
	P    *mcLeaf
	M    map[string][]int
	A    [2]*int
}

type mcRows []mcLeaf

type mcFlatPrivate struct {
	Name    string
	Kids    []*mcLeaf
	private int
}

// mcMutate writes into every settable scalar reachable from v, in place.
func mcMutate(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			mcMutate(v.Elem())
		}
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			mcMutate(v.Index(i))
		}
	case reflect.Map:
		it := v.MapRange()
		for it.Next() {
			x := it.Value()
			if x.Kind() == reflect.Slice || x.Kind() == reflect.Pointer {
				mcMutate(x)
			}
		}
	case reflect.Struct:
		if v.Type() == timeType {
			if v.CanSet() {
				v.Set(reflect.ValueOf(time.Time{}))
			}
			return
		}
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				mcMutate(v.Field(i))
			}
		}
	case reflect.String:
		if v.CanSet() {
			v.SetString("MUT")
		}
	case reflect.Int, reflect.Int64:
		if v.CanSet() {
			v.SetInt(-77)
		}
	case reflect.Uint8:
		if v.CanSet() {
			v.SetUint(0xEE)
		}
	case reflect.Bool:
		if v.CanSet() {
			v.SetBool(!v.Bool())
		}
	}
}

func mcLeafOf(i int) mcLeaf {
	one := 1
	return mcLeaf{N: i, Tags: []string{"a", "b"}, Raw: json.RawMessage(`{"x":1}`), NS: sql.NullString{String: "s", Valid: true},
		Del: gorm.DeletedAt{Time: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), Valid: true}, At: time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC),
		P: &mcLeaf{N: 100 + i, Tags: []string{"deep"}, M: map[string][]int{"d": {1}}}, M: map[string][]int{"k": {1, 2}}, A: [2]*int{&one, nil}}
}

// TestMemoCopiesShareNothingConcurrently: for every shape, a hit served by
// the memo equals a fresh decode, from goroutines that each write over every
// answer they were given.
func TestMemoCopiesShareNothingConcurrently(t *testing.T) {
	vals := []any{
		[]mcLeaf{mcLeafOf(1), mcLeafOf(2)},
		[]*mcLeaf{ptrTo(mcLeafOf(1)), ptrTo(mcLeafOf(2))},
		mcRows{mcLeafOf(3)},
		mcLeafOf(4),
		[2]mcLeaf{mcLeafOf(5), mcLeafOf(6)},
		mcFlatPrivate{Name: "n", Kids: []*mcLeaf{ptrTo(mcLeafOf(7))}, private: 3},
		[]mcFlatPrivate{{Name: "n", Kids: []*mcLeaf{ptrTo(mcLeafOf(8)), nil}}},
		[][]string{{"a"}, nil, {}},
		[]json.RawMessage{json.RawMessage(`1`), nil},
		[]map[string][]int{{"a": {1}}},
	}
	for vi, v := range vals {
		t.Run(fmt.Sprintf("%d-%T", vi, v), func(t *testing.T) {
			typ := reflect.TypeOf(v)
			src := reflect.New(typ)
			src.Elem().Set(reflect.ValueOf(v))
			b, _ := encodeResult(src, 1, nil)
			if b == nil {
				t.Fatal("not encodable")
			}
			fresh := func() reflect.Value {
				d := reflect.New(typ).Elem()
				if _, err := decodeResult(b, d, nil); err != nil {
					t.Fatal(err)
				}
				return d
			}
			want := fresh()
			m := NewMemo(1 << 20)
			key := fmt.Sprint(vi)
			var wg sync.WaitGroup
			for g := range 6 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 30 {
						d := reflect.New(typ).Elem()
						if _, err := m.Decode(key, b, d, nil); err != nil {
							t.Error(err)
							return
						}
						if !reflect.DeepEqual(d.Interface(), want.Interface()) {
							t.Errorf("goroutine %d run %d: %#v\nwant %#v", g, i, d.Interface(), want.Interface())
							return
						}
						mcMutate(d)
					}
				}()
			}
			wg.Wait()
			if _, ok := m.cache.GetIfPresent(key); !ok {
				t.Error("the answer was not remembered: the test did not exercise the memo")
			}
		})
	}
}

func ptrTo[T any](v T) *T { return &v }
