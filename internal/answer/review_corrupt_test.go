package answer

import (
	"database/sql"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/dogpile-go/dogpile/region"
)

// reviewRow is what reviewRescanner scans rows into.
type reviewRow struct {
	ID   int64
	Name string
}

// reviewRescanner scans two columns per row, as a query's scan would.
type reviewRescanner struct{}

func (reviewRescanner) Rescan(dest reflect.Value, rows *sql.Rows) error {
	defer rows.Close()
	var out []reviewRow
	for rows.Next() {
		var r reviewRow
		if err := rows.Scan(&r.ID, &r.Name); err != nil {
			return err
		}
		out = append(out, r)
	}
	dest.Set(reflect.ValueOf(out))
	return rows.Err()
}

// reviewDecode decodes b into a fresh value of type t, turning a panic
// into an error that says so.
func reviewDecode(c region.Codec, b []byte, t reflect.Type) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("PANIC: %v", p)
		}
	}()
	_, err = decodeResult(b, reflect.New(t).Elem(), reviewRescanner{})
	return err
}

// Review finding: an answer stored as rows whose stored row holds more
// values than it has columns (a corrupted or foreign payload: the shape of
// storedRows is not checked by decodeRows) panics in replayRows.Next with
// an index out of range, in the caller's goroutine, instead of failing as a
// miss. Decoding must never panic on malformed bytes.
func TestReviewRowsPayloadLongerRowPanics(t *testing.T) {
	c := region.MsgpackCodec{}
	body, err := c.Marshal(storedRows{
		Columns: []string{"id", "name"},
		Rows:    [][]typedValue{{{T: "int64", V: int64(1)}, {T: "string", V: "a"}, {T: "string", V: "extra"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	b := append([]byte{resultFormat, 1, timesAsDecoded, destRows}, body...)
	if err := reviewDecode(c, b, reflect.TypeOf([]reviewRow(nil))); err != nil && len(err.Error()) > 5 && err.Error()[:5] == "PANIC" {
		t.Fatalf("decoding a malformed rows payload: %v", err)
	}
}

// Every truncation and single-byte corruption of a valid answer of each
// kind (compact with a zone block, JSON with a zone block, typed maps,
// rows) decodes as an error or a value, never a panic.
func TestReviewCorruptPayloadsNeverPanic(t *testing.T) {
	fixed := time.FixedZone("X", 3600)
	type zoned struct {
		ID uint
		A  time.Time
		B  []time.Time
	}
	at := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	zv := []zoned{{ID: 1, A: at.In(fixed), B: []time.Time{at, at.Local(), {}}}}
	mv := []map[string]any{{"id": int64(1), "at": at.In(fixed), "p": new(int32), "b": []byte("x")}}
	rows := &Rows{columns: []string{"id", "name"}, values: [][]any{{int64(1), "a"}, {int64(2), []byte("b")}}}

	type payload struct {
		name string
		c    region.Codec
		b    []byte
		t    reflect.Type
	}
	var ps []payload
	for _, c := range []region.Codec{region.MsgpackCodec{}, region.JSONCodec{}} {
		// Structs are encoded by the codec only with msgpack; with another
		// codec the plugin stores them as rows (StoredAsRows).
		if _, ok := c.(region.MsgpackCodec); ok {
			b, why := encodeResult(reflect.ValueOf(&zv), 1, nil)
			if b == nil {
				t.Fatalf("zoned: %s", why)
			}
			ps = append(ps, payload{fmt.Sprintf("zoned %T", c), c, b, reflect.TypeOf(zv)})
		}
		b, why := encodeResult(reflect.ValueOf(&mv), 1, nil)
		if b == nil {
			t.Fatalf("maps: %s", why)
		}
		ps = append(ps, payload{fmt.Sprintf("maps %T", c), c, b, reflect.TypeOf(mv)})
		var dst []reviewRow
		b, why = encodeResult(reflect.ValueOf(&dst), 2, rows)
		if b == nil {
			t.Fatalf("rows: %s", why)
		}
		ps = append(ps, payload{fmt.Sprintf("rows %T", c), c, b, reflect.TypeOf(dst)})
	}
	for _, p := range ps {
		if err := reviewDecode(p.c, p.b, p.t); err != nil {
			t.Fatalf("%s: the valid payload: %v", p.name, err)
		}
		report := func(what string, err error) {
			if err != nil && len(err.Error()) >= 5 && err.Error()[:5] == "PANIC" {
				t.Errorf("%s, %s: %v", p.name, what, err)
			}
		}
		for cut := range len(p.b) {
			report(fmt.Sprintf("first %d bytes", cut), reviewDecode(p.c, p.b[:cut], p.t))
		}
		for i := range p.b {
			for _, v := range []byte{0, 1, 0x7f, 0x80, 0xff, p.b[i] ^ 0xff, p.b[i] + 1, p.b[i] - 1} {
				b := append([]byte(nil), p.b...)
				b[i] = v
				report(fmt.Sprintf("byte %d = %#x", i, v), reviewDecode(p.c, b, p.t))
			}
		}
	}
}
