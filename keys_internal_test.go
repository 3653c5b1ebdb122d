package dogpile

import (
	"bytes"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"math"
	"reflect"
	"testing"
	"time"
)

type status int

// Named types of basic kinds: keyed by their type and value, not by fmt.
type (
	otherStatus int
	label       string
	flag        bool
	ratio       float64
	small       uint8
)

type upper string

func (u upper) Value() (driver.Value, error) { return string(u) + "!", nil }

type nilValuer struct{ s *string }

func (n *nilValuer) Value() (driver.Value, error) { return *n.s, nil } // panics on a nil receiver

// Valuers for FuzzBindValues: keyed by their type and by what Value sends.

// centsValuer has a value receiver: it, and a pointer to it, are Valuers.
type centsValuer int64

func (c centsValuer) Value() (driver.Value, error) { return int64(c) * 100, nil }

// refValuer has a pointer receiver only.
type refValuer struct{ s string }

func (r *refValuer) Value() (driver.Value, error) { return "ref:" + r.s, nil }

// errValuer's Value fails.
type errValuer string

func (e errValuer) Value() (driver.Value, error) {
	return nil, fmt.Errorf("errValuer %q cannot be sent", string(e))
}

// timeValuer sends a time in the zone it names by offset.
type timeValuer struct {
	unix   int64
	offset int
}

func (v timeValuer) Value() (driver.Value, error) {
	return time.Unix(v.unix, 0).In(time.FixedZone("", v.offset)), nil
}

func encodeVars(vars ...any) []byte {
	var b []byte
	for _, v := range vars {
		b = appendValue(b, v)
	}
	return b
}

// TestBindValuesNeverCollide: every value in the list is keyed apart from
// every other, including those the issue names: 1, "1", int64(1), nil and "".
func TestBindValuesNeverCollide(t *testing.T) {
	utc := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		paris = time.FixedZone("CET", 3600)
	}
	values := []any{
		1, "1", int64(1), int32(1), int8(1), uint(1), uint64(1), float64(1), float32(1), true, status(1),
		nil, "", []byte(nil), []byte{}, []byte("1"), false, 0, int64(0), "0",
		utc, utc.In(paris), utc.Add(time.Nanosecond), time.Time{}, utc.Local(),
		sql.NullString{String: "1", Valid: true}, sql.NullString{}, sql.NullInt64{Int64: 1, Valid: true},
		upper("a"), "a!", &nilValuer{},
		[]int{1, 2}, []string{"1", "2"}, "a\x00b", "a", "b",
		ptrTo(int64(1)), ptrTo(1), ptrTo("1"), (*int64)(nil), ptrTo(ptrTo(int64(1))),
		[]int{1}, []int(nil), []int{}, [2]int{1, 2}, []*int{ptrTo(1)},
		otherStatus(1), status(2), label("1"), label(""), flag(true), flag(false), ratio(1), small(1), ptrTo(status(1)),
	}
	seen := map[string]int{}
	for i, v := range values {
		k := string(encodeVars(v))
		if j, ok := seen[k]; ok {
			t.Errorf("values %d (%T %#v) and %d (%T %#v) have the same key encoding", i, v, v, j, values[j], values[j])
		}
		seen[k] = i
	}
	// Boundaries between values cannot shift: ("ab", "c") != ("a", "bc").
	if bytes.Equal(encodeVars("ab", "c"), encodeVars("a", "bc")) {
		t.Error(`("ab","c") and ("a","bc") collide`)
	}
	if bytes.Equal(encodeVars(nil, ""), encodeVars("", nil)) {
		t.Error(`(nil,"") and ("",nil) collide`)
	}
}

func ptrTo[T any](v T) *T { return &v }

// TestPointerBindValuesKeyedByValue: a pointer is keyed by what it points at
// (what the database is sent), never by its address, which a later query
// may reuse for another value.
func TestPointerBindValuesKeyedByValue(t *testing.T) {
	p := new(int64)
	*p = 1
	one := encodeVars(p)
	*p = 2
	if bytes.Equal(one, encodeVars(p)) {
		t.Error("a pointer whose value changed kept its key")
	}
	if !bytes.Equal(one, encodeVars(ptrTo(int64(1)))) {
		t.Error("two pointers to equal values have different keys")
	}
	if !bytes.Equal(encodeVars([]*int{ptrTo(3)}), encodeVars([]*int{ptrTo(3)})) {
		t.Error("slices of pointers to equal values have different keys")
	}
}

func TestTimeKeepsInstantAndZone(t *testing.T) {
	a := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	b := a.In(time.FixedZone("X", 3600)) // same instant, another zone
	if bytes.Equal(encodeVars(a), encodeVars(b)) {
		t.Error("same instant in two zones share a key")
	}
	if !bytes.Equal(encodeVars(a), encodeVars(a.Add(0))) {
		t.Error("equal times have different keys")
	}
}

func TestValuerKeyedByWhatItSends(t *testing.T) {
	// Two Valuers of one type that send the same value share a key; the
	// same value sent by another type does not.
	if !bytes.Equal(encodeVars(upper("x")), encodeVars(upper("x"))) {
		t.Error("equal Valuers differ")
	}
	if bytes.Equal(encodeVars(upper("x")), encodeVars("x!")) {
		t.Error("a Valuer collides with the plain value it sends")
	}
	if bytes.Equal(encodeVars(sql.NullString{String: "x", Valid: true}), encodeVars(sql.NullString{String: "y", Valid: true})) {
		t.Error("Valuers sending different values collide")
	}
}

// FuzzBindValues: two lists of bind values have the same key encoding only
// if they are the same values of the same types (sameBinds), and then
// always.
func FuzzBindValues(f *testing.F) {
	f.Add(int64(1), "1", uint8(0), int64(1), "1", uint8(1))
	f.Add(int64(0), "", uint8(2), int64(0), "", uint8(3))
	f.Add(int64(-7), "a", uint8(4), int64(-7), "a", uint8(5))
	// Valuers: against each other and against what they send.
	f.Add(int64(3), "x", uint8(15), int64(300), "x", uint8(0))
	f.Add(int64(3), "x", uint8(16), int64(3), "ref:x", uint8(1))
	f.Add(int64(3), "x", uint8(17), int64(3), "y", uint8(17))
	f.Add(int64(3), "x", uint8(18), int64(6), "x", uint8(18))
	f.Add(int64(0), "x", uint8(19), int64(0), "x", uint8(15))
	f.Add(int64(5), "x", uint8(20), int64(5), "x", uint8(7))
	f.Add(int64(2), "x", uint8(21), int64(4), "y", uint8(21))
	f.Fuzz(func(t *testing.T, n1 int64, s1 string, k1 uint8, n2 int64, s2 string, k2 uint8) {
		v1, v2 := pick(n1, s1, k1), pick(n2, s2, k2)
		e1, e2 := encodeVars(v1...), encodeVars(v2...)
		same := len(v1) == len(v2)
		for i := 0; same && i < len(v1); i++ {
			same = sameBind(v1[i], v2[i])
		}
		if bytes.Equal(e1, e2) != same {
			t.Fatalf("vars %#v and %#v: encodings equal=%v, values equal=%v", v1, v2, bytes.Equal(e1, e2), same)
		}
	})
}

// sameBind reports whether a and b are the same bind value: of the same
// type, and for a driver.Valuer sending the same value (or failing, or
// panicking, with the same message), as keys.go promises; otherwise
// reflect.DeepEqual, which follows pointers to what they point at.
func sameBind(a, b any) bool {
	if reflect.TypeOf(a) != reflect.TypeOf(b) {
		return false
	}
	va, aok := a.(driver.Valuer)
	vb, bok := b.(driver.Valuer)
	if aok && bok {
		sa, ea := sendOf(va)
		sb, eb := sendOf(vb)
		return ea == eb && (ea != "" || sameBind(sa, sb))
	}
	return reflect.DeepEqual(a, b)
}

// sendOf calls Value, turning an error or a panic into its message.
func sendOf(v driver.Valuer) (sent driver.Value, failure string) {
	defer func() {
		if p := recover(); p != nil {
			failure = fmt.Sprintf("panic: %v", p)
		}
	}()
	sent, err := v.Value()
	if err != nil {
		return nil, "error: " + err.Error()
	}
	return sent, ""
}

// pick turns fuzz inputs into a list of bind values of varied types.
func pick(n int64, s string, kind uint8) []any {
	one := func(k uint8) any {
		switch k % 22 {
		case 0:
			return n
		case 1:
			return s
		case 2:
			return int32(n)
		case 3:
			return []byte(s)
		case 4:
			return nil
		case 5:
			return n%2 == 0
		case 6:
			return float64(n)
		case 7:
			return time.Unix(n%1e10, 0).UTC()
		case 8:
			return uint64(n)
		case 9:
			return status(n)
		case 10:
			return sql.NullInt64{Int64: n, Valid: n != 0}
		case 11:
			v := n // a new address every time: keys must follow the value
			return &v
		case 12:
			if n%3 == 0 {
				return (*int64)(nil)
			}
			return &s
		case 13:
			return []int64{n, int64(len(s))}
		case 15: // a Valuer with a value receiver
			return centsValuer(n)
		case 16: // a pointer to a Valuer with a pointer receiver
			return &refValuer{s}
		case 17: // a Valuer whose Value fails
			return errValuer(s)
		case 18: // a Valuer whose Value panics on a nil receiver
			if n%2 == 0 {
				return (*nilValuer)(nil)
			}
			return &nilValuer{&s}
		case 19: // a pointer to a value-receiver Valuer, nil or not
			if n%3 == 0 {
				return (*centsValuer)(nil)
			}
			c := centsValuer(n)
			return &c
		case 20: // a Valuer sending a time in a fixed zone
			return timeValuer{n % 1e10, int(n%50_000) - 25_000}
		case 21: // a Valuer of the standard library, sending NULL when not Valid
			return sql.NullString{String: s, Valid: n%2 == 0}
		default:
			return fmt.Sprint(n)
		}
	}
	out := []any{one(kind)}
	if kind > 127 {
		out = append(out, one(kind>>2))
	}
	return out
}

// TestZeroMemory: prefilled's fast path (fromcache.go) says zero only of
// values IsZero says are zero, and says it of values just declared.
func TestZeroMemory(t *testing.T) {
	type row struct {
		ID      uint
		Name    string
		At      time.Time
		Tags    []string
		Ratio   float64
		Pointer *int
	}
	negZero := math.Copysign(0, -1)
	empty := "x"[:0]
	values := []any{
		&row{}, &row{ID: 1}, &row{Name: "a"}, &row{At: time.Unix(0, 0)}, &row{Tags: []string{}},
		&row{Ratio: negZero}, &row{Pointer: new(int)}, &row{Name: empty},
		new(int64), ptrTo(int64(3)), new(string), ptrTo("a"), new([2048]byte),
	}
	for i, v := range values {
		rv := reflect.ValueOf(v).Elem()
		if zeroMemory(rv) && !rv.IsZero() {
			t.Errorf("value %d (%#v): zeroMemory but not IsZero", i, v)
		}
	}
	for i, v := range []any{&row{}, new(int64), new(string)} {
		if !zeroMemory(reflect.ValueOf(v).Elem()) {
			t.Errorf("value %d (%T): a value just declared is not zeroMemory", i, v)
		}
	}
}
