package answer

import (
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"reflect"
	"testing"
	"time"
	_ "time/tzdata"

	"gorm.io/gorm"

	"github.com/dogpile-go/dogpile/region"
)

// money keeps its state in an unexported field, as a column type may.
type money struct{ cents int64 }

func (m *money) Scan(src any) error {
	if n, ok := src.(int64); ok {
		m.cents = n
	}
	return nil
}

func (m money) Value() (driver.Value, error) { return m.cents, nil }

// textual marshals itself as text: not trusted to be exact, and its field
// is unexported, so it is not carried.
type textual struct{ s string }

func (t textual) MarshalText() ([]byte, error)  { return []byte(t.s), nil }
func (t *textual) UnmarshalText(b []byte) error { t.s = string(b); return nil }
func (t *textual) Scan(src any) error           { t.s, _ = src.(string); return nil }

type carryBase struct {
	ID      uint
	private int // never filled by a scan: does not count
}

var _ = carryBase{private: 1}.private // read, for the linter: the field exists to be ignored

type carryPlain struct {
	carryBase
	Name    string
	Nick    sql.NullString
	Deleted gorm.DeletedAt
	Raw     json.RawMessage
	Posts   []carryPlain // an association: a model, filled by preloads
	At      time.Time
	hidden  *int // never filled by a scan: does not count
}

var _ = carryPlain{}.hidden

type carryText struct {
	ID   uint
	Text textual
}

// binaryText marshals itself losslessly: carried though its field is
// unexported.
type binaryText struct{ s string }

func (b binaryText) MarshalBinary() ([]byte, error)  { return []byte(b.s), nil }
func (b *binaryText) UnmarshalBinary(p []byte) error { b.s = string(p); return nil }
func (b *binaryText) Scan(src any) error             { b.s, _ = src.(string); return nil }

type carryBinary struct {
	ID  uint
	Bin binaryText
}

type carryMoney struct {
	ID    uint
	Price money
}

type carryMoneyPtr struct {
	ID    uint
	Price *money
}

type carryNested struct {
	ID    uint
	Items []carryMoney // an association whose column type is not carried
}

type carrySerializer struct {
	ID    uint
	Prefs struct{ on bool } `gorm:"serializer:json"`
}

type carrySkipped struct {
	ID   uint
	Note string `msgpack:"-"`
}

type carryIgnored struct {
	ID   uint
	Note string `gorm:"-" msgpack:"-"`
}

type carryTimeMap struct {
	ID  uint
	Ats map[string]time.Time `gorm:"serializer:json"`
}

type carryAny struct {
	ID    uint
	Extra any
}

func TestStoredAsRows(t *testing.T) {
	for _, c := range []struct {
		v    any
		rows bool
	}{
		{carryPlain{}, false},
		{[]carryPlain{}, false},
		{[]*carryPlain{}, false},
		{carryText{}, true},
		{carryBinary{}, false},
		{carryMoney{}, true},
		{[]carryMoney{}, true},
		{carryMoneyPtr{}, true},
		{carryNested{}, true},
		{carrySerializer{}, true},
		{carrySkipped{}, true},
		{carryIgnored{}, false},
		{carryAny{}, true},
		{map[string]any{}, false},
		{[]map[string]any{}, false},
		{int64(0), false},
		{[]string{}, false},
		{[]money{}, true},
		{sql.NullTime{}, false},
		{carryTimeMap{}, true},
	} {
		if got := StoredAsRows(reflect.TypeOf(c.v)); got != c.rows {
			t.Errorf("StoredAsRows(%T) = %v; want %v", c.v, got, c.rows)
		}
	}
}

// Times keep their location through the codec: UTC, Local, fixed zones by
// name and offset, named zones by their IANA name, mixed in one answer.
func TestZonesRoundTrip(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris") // time/tzdata is linked in
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		ID uint
		A  time.Time
		B  *time.Time
		C  []time.Time
	}
	at := time.Date(2024, 3, 1, 10, 0, 0, 123, time.UTC)
	fixed := time.FixedZone("", 5*3600+1800)
	named := time.FixedZone("+0530", 5*3600+1800)
	b := at.In(paris)
	in := []row{
		{ID: 1, A: at, B: &b, C: []time.Time{at.In(fixed), at.In(named), at.Local(), {}}},
		{ID: 2, A: at.In(fixed)},
	}
	for _, c := range []region.Codec{region.MsgpackCodec{}} {
		raw, why := encodeResult(reflect.ValueOf(&in), 2, nil)
		if raw == nil {
			t.Fatalf("%T: not stored: %s", c, why)
		}
		var out []row
		if _, err := decodeResult(raw, reflect.ValueOf(&out).Elem(), nil); err != nil {
			t.Fatalf("%T: decode: %v", c, err)
		}
		check := func(what string, want, got time.Time) {
			t.Helper()
			if !want.Equal(got) || want.Location().String() != got.Location().String() {
				t.Errorf("%T %s: got %v (%q); want %v (%q)", c, what, got, got.Location(), want, want.Location())
			}
			wn, wo := want.Zone()
			if gn, gO := got.Zone(); gn != wn || gO != wo {
				t.Errorf("%T %s: zone %s %d; want %s %d", c, what, gn, gO, wn, wo)
			}
		}
		check("A", in[0].A, out[0].A)
		check("B", *in[0].B, *out[0].B)
		for i := range in[0].C {
			check("C", in[0].C[i], out[0].C[i])
		}
		check("second row", in[1].A, out[1].A)
	}
}

// A zone block that does not match the answer's times is an error, never
// a panic or a wrong location.
func TestZoneBlockMismatch(t *testing.T) {
	type row struct{ A, B time.Time }
	in := row{A: time.Date(2024, 1, 1, 0, 0, 0, 0, time.FixedZone("X", 3600)), B: time.Now().UTC()}
	raw, _ := encodeResult(reflect.ValueOf(&in), 1, nil)
	// Decode into a type with one more time: the block has too few.
	type wider struct{ A, B, C time.Time }
	var out wider
	_, _ = decodeResult(raw, reflect.ValueOf(&out).Elem(), nil) // another shape: must not panic
	for cut := 1; cut < len(raw); cut++ {
		var r row
		if _, err := decodeResult(raw[:cut], reflect.ValueOf(&r).Elem(), nil); err == nil {
			t.Errorf("decoding the first %d of %d bytes succeeded", cut, len(raw))
		}
	}
}

// Map rows keep zoned times too.
func TestTypedMapsKeepZones(t *testing.T) {
	at := time.Date(2024, 3, 1, 10, 0, 0, 0, time.FixedZone("+0530", 5*3600+1800))
	in := []map[string]any{{"at": at, "n": int32(3)}}
	raw, why := encodeResult(reflect.ValueOf(&in), 1, nil)
	if raw == nil {
		t.Fatalf("not stored: %s", why)
	}
	var out []map[string]any
	if _, err := decodeResult(raw, reflect.ValueOf(&out).Elem(), nil); err != nil {
		t.Fatal(err)
	}
	got := out[0]["at"].(time.Time)
	if !got.Equal(at) || got.Location().String() != "+0530" || out[0]["n"] != int32(3) {
		t.Errorf("got %v %v; want %v", got, out[0]["n"], at)
	}
}
