package region

import (
	"context"
	"math"
	"math/big"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// keyOf returns the default key of arg for a function named name.
func keyOf[A any](t *testing.T, name string, arg A) string {
	t.Helper()
	f := newFuncBase[A](New(nullBackend{}), name, nil)
	k, err := f.Key(arg)
	if err != nil {
		t.Fatalf("key of %#v: %v", arg, err)
	}
	return k
}

// nullBackend is the smallest Backend, for tests that need a region but
// never reach its backend.
type nullBackend struct{}

func (nullBackend) GetMulti(_ context.Context, keys []string) ([][]byte, error) {
	return make([][]byte, len(keys)), nil
}
func (nullBackend) SetMulti(context.Context, []Item) error             { return nil }
func (nullBackend) SetIf(context.Context, Item, []Guard) (bool, error) { return false, nil }
func (nullBackend) Delete(context.Context, ...string) error            { return nil }
func (nullBackend) Incr(context.Context, string) (int64, error)        { return 1, nil }
func (nullBackend) Mutex(string) Mutex                                 { return nil }
func (nullBackend) ProcessLocal() bool                                 { return true }

type userID int

type point struct {
	X, Y int
	tag  string
	_    int
}

type definedTime time.Time

// TestFuncKeyGolden pins the default key format (FuncKeyVersion "v1"): a
// change of any of these keys is a change of format, which must come with a
// new FuncKeyVersion.
func TestFuncKeyGolden(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skipf("no time zone database: %v", err)
	}
	instant := time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)
	n := 7
	var nilPtr *int
	golden := []struct {
		got, want string
	}{
		{keyOf(t, "users.get", 42), "users.get|v1|i:42"},
		{keyOf(t, "users.get", -42), "users.get|v1|i:-42"},
		{keyOf(t, "users.get", "42"), "users.get|v1|s2:42"},
		{keyOf(t, "users.get", int64(42)), "users.get|v1|i64:42"},
		{keyOf(t, "users.get", uint8(42)), "users.get|v1|u8:42"},
		{keyOf(t, "users.get", userID(42)), "users.get|v1|i:42"},
		{keyOf(t, "a|b#c%d", true), "a%7Cb%23c%25d|v1|t"},
		{keyOf(t, "f", 1.5), "f|v1|f64:1.5"},
		{keyOf(t, "f", float32(0.1)), "f|v1|f32:0.1"},
		{keyOf(t, "f", math.Inf(-1)), "f|v1|f64:-Inf"},
		{keyOf(t, "f", complex(1, -2)), "f|v1|c128:(1-2i)"},
		{keyOf(t, "f", []byte("hi")), "f|v1|x6869"},
		{keyOf(t, "f", []byte(nil)), "f|v1|n"},
		{keyOf(t, "f", [2]byte{1, 255}), "f|v1|x01ff"},
		{keyOf(t, "f", []int{1, 2}), "f|v1|[i:1,i:2]"},
		{keyOf(t, "f", []int{}), "f|v1|[]"},
		{keyOf(t, "f", []int(nil)), "f|v1|n"},
		{keyOf(t, "f", map[string]int{"b": 2, "a": 1}), "f|v1|{s1:a=i:1,s1:b=i:2}"},
		{keyOf(t, "f", point{1, 2, "p", 0}), "f|v1|{X=i:1,Y=i:2,tag=s1:p}"},
		{keyOf(t, "f", &n), "f|v1|*i:7"},
		{keyOf(t, "f", nilPtr), "f|v1|n"},
		{keyOf(t, "f", instant), "f|v1|T:2026-01-02T03:04:05.0000006Z"},
		{keyOf(t, "f", instant.In(berlin)), "f|v1|T:2026-01-02T03:04:05.0000006Z@13:Europe/Berlin+3600"},
		{keyOf(t, "f", definedTime(instant)), "f|v1|T:2026-01-02T03:04:05.0000006Z"},
		{keyOf(t, "f", berlin), "f|v1|*L13:Europe/Berlin"},
		{keyOf(t, "f", netip.MustParseAddr("::1")), "f|v1|m3:::1"},
		{keyOf(t, "f", big.NewInt(-12)), "f|v1|*m3:-12"},
		{keyOf(t, "f", any(nil)), "f|v1|n"},
		{keyOf(t, "f", any(42)), "f|v1|i:42"},
		{keyOf(t, "f", any("42")), "f|v1|s2:42"},
		{keyOf(t, "f", any(userID(42))), "f|v1|@43:github.com/dogpile-go/dogpile/region.userIDi:42"},
		{keyOf(t, "f", []any{1, "1", nil, []int{1}}), "f|v1|[i:1,s1:1,n,@5:[]int[i:1]]"},
	}
	for i, g := range golden {
		if g.got != g.want {
			t.Errorf("key %d: got %q, want %q", i, g.got, g.want)
		}
	}
}

// TestFuncKeyDistinct: arguments that differ, in value or (within an
// interface) in type, never share a key, however their text looks.
func TestFuncKeyDistinct(t *testing.T) {
	args := []any{
		nil, 1, "1", int64(1), int8(1), uint(1), uint64(1), 1.0, float32(1), true, "t", "n", "",
		userID(1), []int{1}, []int{}, []int(nil), [1]int{1}, []byte{1}, [1]byte{1}, []byte(nil),
		[]string{"a,b"}, []string{"a", "b"}, []string{"s1:a"}, map[string]int{"a": 1}, map[string]int{},
		map[string]int(nil), struct{ A int }{1}, struct{ B int }{1}, point{X: 1}, &point{X: 1},
		[]any{1, 2}, []any{[]any{1}, 2}, []any{1, []any{2}}, "a|b", "a=b", map[string]string{"a": "b=c"},
		map[string]string{"a=b": "c"}, time.Unix(0, 0).UTC(), time.Unix(0, 0).In(time.FixedZone("X", 3600)),
		time.Unix(0, 1).UTC(), complex(1, 2), complex64(complex(1, 2)), [2]any{1, nil}, [2]any{nil, 1},
	}
	seen := make(map[string]int)
	for i, a := range args {
		k := keyOf(t, "f", a)
		if j, dup := seen[k]; dup {
			t.Errorf("arguments %d (%#v) and %d (%#v) share the key %q", j, args[j], i, a, k)
		}
		seen[k] = i
	}
}

// TestFuncKeyStable: a map's key does not depend on its iteration order,
// nor a time's on its monotonic reading.
func TestFuncKeyStable(t *testing.T) {
	m := make(map[int]string)
	for i := range 100 {
		m[i] = strings.Repeat("x", i%7)
	}
	first := keyOf(t, "f", m)
	for range 20 {
		if k := keyOf(t, "f", m); k != first {
			t.Fatalf("the key of a map changed between calls")
		}
	}
	now := time.Now()
	if keyOf(t, "f", now) != keyOf(t, "f", now.Round(0)) {
		t.Fatal("the monotonic reading of a time is in its key")
	}
	if keyOf(t, "f", definedTime(now)) != keyOf(t, "f", definedTime(now.Round(0))) {
		t.Fatal("the monotonic reading of a type defined as time.Time is in its key")
	}
}

// TestFuncKeyUnsupported: values that cannot be keys are errors, cycles
// among them.
func TestFuncKeyUnsupported(t *testing.T) {
	type node struct{ Next *node }
	cyclic := &node{}
	cyclic.Next = cyclic
	f := newFuncBase[any](New(nullBackend{}), "f", nil)
	for _, a := range []any{make(chan int), func() {}, struct{ F func() }{}, cyclic} {
		if k, err := f.Key(a); err == nil {
			t.Errorf("%T: key %q, want an error", a, k)
		}
	}
}

// TestFuncKeyUnexportedNested: unexported fields are read wherever they
// are, also in map values and interfaces, where reflection gives values that
// cannot be addressed.
func TestFuncKeyUnexportedNested(t *testing.T) {
	type inner struct {
		at time.Time
		n  *big.Int
	}
	type outer struct {
		m map[string]inner
		i any
	}
	v := outer{m: map[string]inner{"a": {time.Unix(1, 0).UTC(), big.NewInt(5)}}, i: inner{n: big.NewInt(6)}}
	got := keyOf(t, "f", v)
	want := "f|v1|{m={s1:a={at=T:1970-01-01T00:00:01Z,n=*m1:5}},i=@"
	if !strings.HasPrefix(got, want) || !strings.HasSuffix(got, "{at=T:0001-01-01T00:00:00Z,n=*m1:6}}") {
		t.Fatalf("key %q", got)
	}
}
