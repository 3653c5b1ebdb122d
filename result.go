package dogpile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/dogpile-go/dogpile/region"
)

// A cached query answer is stored as
//
//	byte     resultFormat
//	uvarint  RowsAffected
//	byte     how times are restored (timesAsDecoded, timesUTC)
//	byte     how the destination is encoded (destByCodec, destTypedMaps)
//	rest     the destination, as the region's codec or typedMaps wrote it
//
// so that a hit fills the destination, RowsAffected and the not-found error
// exactly as the query did.
const resultFormat = 1

const (
	timesAsDecoded byte = iota // the codec already restores them (or there are none)
	timesUTC                   // every time was in UTC: convert after decoding
)

const (
	destByCodec   byte = iota // the destination's own type, through the codec
	destTypedMaps             // map[string]any rows, with each value's Go type kept
	destCompact               // the destination's own type, msgpack with structs as arrays
)

var errResultFormat = errors.New("dogpile: cached answer of another format")

// queryResult is what a FromCache query's creator makes: the answer itself,
// for its own caller, and its encoding, for everyone else.
type queryResult struct {
	fresh        reflect.Value // pointer to the value the query scanned
	rowsAffected int64
	raw          []byte // nil when the answer cannot be encoded faithfully
}

// Payload implements region.Payloader.
func (q *queryResult) Payload() ([]byte, bool) { return q.raw, q.raw != nil }

// answerFor returns the answer for a caller adopting it (region.Loader's
// Adopt), or false when that caller must run its own query. The caller whose
// query made it takes it as it is when it was encoded: the others decode
// their own from the payload. An answer that could not be encoded reaches
// every caller that waited for it, so each takes a deep copy; when it cannot
// be copied the others refuse it, and the maker keeps the original, which
// nobody else then reads.
func (q *queryResult) answerFor(own bool) (reflect.Value, bool) {
	answer := q.fresh.Elem()
	if own && q.raw != nil {
		return answer, true
	}
	if c, ok := copyShared(answer); ok {
		return c, true
	}
	return answer, own
}

var (
	mapType      = reflect.TypeOf(map[string]any(nil))
	mapSliceType = reflect.TypeOf([]map[string]any(nil))
	timeType     = reflect.TypeOf(time.Time{})
)

// encodeResult encodes the answer in fresh (a pointer), or returns nil when
// it cannot be restored value for value.
func encodeResult(c region.Codec, fresh reflect.Value, rows int64) []byte {
	b := []byte{resultFormat}
	b = binary.AppendUvarint(b, uint64(rows))
	t := fresh.Elem().Type()
	if t == mapType || t == mapSliceType {
		body, err := encodeTypedMaps(c, fresh.Elem())
		if err != nil {
			return nil
		}
		return append(append(b, timesAsDecoded, destTypedMaps), body...)
	}
	mode := timesAsDecoded
	if w := timeWalkerFor(t); w != nil {
		utc, local := 0, 0
		w(fresh.Elem(), func(tm *time.Time) {
			switch {
			case tm.IsZero():
			case tm.Location() == time.UTC:
				utc++
			case tm.Location() == time.Local:
				local++
			default:
				utc, local = -1<<30, -1<<30 // another zone: cannot be restored
			}
		})
		switch {
		case utc < 0:
			return nil
		case utc > 0 && local > 0:
			return nil
		case utc > 0:
			mode = timesUTC
		}
	}
	if _, ok := c.(region.MsgpackCodec); ok {
		// With the default codec, structs are written as arrays rather than
		// maps of field names: a third of the size and much faster to read.
		// It is safe here because the key holds the type's fingerprint, so
		// bytes are only ever read back into the same struct shape.
		body, err := compactMarshal(fresh.Interface())
		if err != nil {
			return nil
		}
		return append(append(b, mode, destCompact), body...)
	}
	body, err := c.Marshal(fresh.Interface())
	if err != nil {
		return nil
	}
	return append(append(b, mode, destByCodec), body...)
}

// compactMarshal encodes v as msgpack with structs as arrays.
func compactMarshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseArrayEncodedStructs(true)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// compactDecoder is a pooled msgpack decoder with its reader.
type compactDecoder struct {
	r bytes.Reader
	d *msgpack.Decoder
}

var compactDecoders = sync.Pool{New: func() any { return &compactDecoder{d: msgpack.NewDecoder(nil)} }}

// compactUnmarshal decodes what compactMarshal wrote into v.
func compactUnmarshal(b []byte, v any) error {
	cd := compactDecoders.Get().(*compactDecoder)
	cd.r.Reset(b)
	cd.d.Reset(&cd.r)
	err := cd.d.Decode(v)
	if err == nil && cd.r.Len() != 0 {
		err = errResultFormat
	}
	cd.r.Reset(nil)
	cd.d.Reset(nil)
	compactDecoders.Put(cd)
	return err
}

// resultHeader splits an answer into its header fields and body.
func resultHeader(b []byte) (rows int64, mode, kind byte, body []byte, err error) {
	if len(b) < 1 || b[0] != resultFormat {
		return 0, 0, 0, nil, errResultFormat
	}
	r, n := binary.Uvarint(b[1:])
	if n <= 0 || len(b) < 1+n+2 {
		return 0, 0, 0, nil, errResultFormat
	}
	return int64(r), b[1+n], b[2+n], b[3+n:], nil
}

// decodeResult fills dest (addressable) from b and returns RowsAffected.
func decodeResult(c region.Codec, b []byte, dest reflect.Value) (int64, error) {
	rows, mode, kind, body, err := resultHeader(b)
	if err != nil {
		return 0, err
	}
	switch kind {
	case destTypedMaps:
		if err := decodeTypedMaps(c, body, dest); err != nil {
			return 0, err
		}
	case destByCodec, destCompact:
		// Decode in place over a zeroed destination, as a fresh scan would
		// fill it; on failure leave it zeroed, never half-written.
		dest.SetZero()
		if kind == destCompact {
			err = compactUnmarshal(body, dest.Addr().Interface())
		} else {
			err = c.Unmarshal(body, dest.Addr().Interface())
		}
		if err != nil {
			dest.SetZero()
			return 0, err
		}
		if mode == timesUTC {
			if w := timeWalkerFor(dest.Type()); w != nil {
				w(dest, toUTC)
			}
		}
	default:
		return 0, errResultFormat
	}
	return rows, nil
}

func toUTC(tm *time.Time) {
	if !tm.IsZero() {
		*tm = tm.UTC()
	}
}

// timeWalker calls f with every time.Time reachable in v through structs,
// pointers, slices and arrays.
type timeWalker func(v reflect.Value, f func(*time.Time))

var timeWalkers sync.Map // reflect.Type → *timeWalker (nil pointer: no times)

func timeWalkerFor(t reflect.Type) timeWalker {
	if w, ok := timeWalkers.Load(t); ok {
		return *w.(*timeWalker)
	}
	w := buildTimeWalker(t, map[reflect.Type]*timeWalker{})
	timeWalkers.Store(t, &w)
	return w
}

func buildTimeWalker(t reflect.Type, building map[reflect.Type]*timeWalker) timeWalker {
	if t == timeType {
		return func(v reflect.Value, f func(*time.Time)) { f(v.Addr().Interface().(*time.Time)) }
	}
	if p, ok := building[t]; ok {
		// A recursive type: walk it through the walker being built.
		return func(v reflect.Value, f func(*time.Time)) {
			if *p != nil {
				(*p)(v, f)
			}
		}
	}
	slot := new(timeWalker)
	building[t] = slot
	var w timeWalker
	switch t.Kind() {
	case reflect.Pointer:
		if e := buildTimeWalker(t.Elem(), building); e != nil {
			w = func(v reflect.Value, f func(*time.Time)) {
				if !v.IsNil() {
					e(v.Elem(), f)
				}
			}
		}
	case reflect.Slice, reflect.Array:
		if e := buildTimeWalker(t.Elem(), building); e != nil {
			w = func(v reflect.Value, f func(*time.Time)) {
				for i := 0; i < v.Len(); i++ {
					e(v.Index(i), f)
				}
			}
		}
	case reflect.Struct:
		type part struct {
			i int
			w timeWalker
		}
		var parts []part
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			if !sf.IsExported() {
				continue
			}
			if e := buildTimeWalker(sf.Type, building); e != nil {
				parts = append(parts, part{i, e})
			}
		}
		if len(parts) > 0 {
			w = func(v reflect.Value, f func(*time.Time)) {
				for _, p := range parts {
					p.w(v.Field(p.i), f)
				}
			}
		}
	}
	*slot = w
	return w
}

// typedValue keeps a map value's Go type across the codec, which on its own
// decodes every integer of an interface as int64 and every time as Local.
type typedValue struct {
	T string
	V any
}

func encodeTypedMaps(c region.Codec, v reflect.Value) ([]byte, error) {
	rows := rowsOf(v)
	out := make([]map[string]typedValue, len(rows))
	for i, row := range rows {
		m := make(map[string]typedValue, len(row))
		for k, x := range row {
			tv, err := toTyped(x)
			if err != nil {
				return nil, err
			}
			m[k] = tv
		}
		out[i] = m
	}
	isNil := v.IsNil()
	return c.Marshal(struct {
		Nil  bool
		Rows []map[string]typedValue
	}{isNil, out})
}

func decodeTypedMaps(c region.Codec, b []byte, dest reflect.Value) error {
	var in struct {
		Nil  bool
		Rows []map[string]typedValue
	}
	if err := c.Unmarshal(b, &in); err != nil {
		return err
	}
	rows := make([]map[string]any, len(in.Rows))
	for i, r := range in.Rows {
		m := make(map[string]any, len(r))
		for k, tv := range r {
			x, err := fromTyped(tv)
			if err != nil {
				return err
			}
			m[k] = x
		}
		rows[i] = m
	}
	return mergeMaps(dest, rows)
}

// mergeMaps fills a map or []map destination as GORM's scan does: a map
// receives the first row's columns over the keys it already has (and is made
// only when there is a row); a []map has the rows appended.
func mergeMaps(dest reflect.Value, rows []map[string]any) error {
	if len(rows) == 0 {
		return nil
	}
	if dest.Type() == mapSliceType {
		dest.Set(reflect.AppendSlice(dest, reflect.ValueOf(rows)))
		return nil
	}
	if dest.IsNil() {
		if !dest.CanSet() {
			return errors.New("dogpile: cannot fill a nil map passed by value")
		}
		dest.Set(reflect.MakeMap(mapType))
	}
	m := dest.Interface().(map[string]any)
	for k, x := range rows[0] {
		m[k] = x
	}
	return nil
}

// rowsOf returns the rows of a map or []map value.
func rowsOf(v reflect.Value) []map[string]any {
	if v.Type() == mapType {
		if v.IsNil() {
			return nil
		}
		return []map[string]any{v.Interface().(map[string]any)}
	}
	return v.Interface().([]map[string]any)
}

var errUntyped = errors.New("dogpile: value of a type the cache does not restore")

func toTyped(x any) (typedValue, error) {
	if rv := reflect.ValueOf(x); rv.Kind() == reflect.Pointer && !rv.IsNil() {
		// GORM scans model columns of pointer type into maps as pointers.
		tv, err := toTyped(rv.Elem().Interface())
		tv.T = "*" + tv.T
		return tv, err
	}
	switch v := x.(type) {
	case nil:
		return typedValue{T: "nil"}, nil
	case int64, int32, int16, int8, int, uint64, uint32, uint16, uint8, uint, float64, float32, bool, string, []byte:
		return typedValue{T: reflect.TypeOf(x).String(), V: x}, nil
	case time.Time:
		switch v.Location() {
		case time.UTC:
			return typedValue{T: "time.UTC", V: v}, nil
		case time.Local:
			return typedValue{T: "time.Local", V: v}, nil
		}
	}
	return typedValue{}, fmt.Errorf("%w: %T", errUntyped, x)
}

// typedKinds are the Go types a typedValue restores by conversion.
var typedKinds = func() map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for _, v := range []any{int64(0), int32(0), int16(0), int8(0), 0, uint64(0), uint32(0), uint16(0), uint8(0), uint(0), float64(0), float32(0), false, ""} {
		t := reflect.TypeOf(v)
		m[t.String()] = t
	}
	return m
}()

func fromTyped(tv typedValue) (any, error) {
	if elem, ok := strings.CutPrefix(tv.T, "*"); ok {
		x, err := fromTyped(typedValue{T: elem, V: tv.V})
		if err != nil || x == nil {
			return nil, err
		}
		p := reflect.New(reflect.TypeOf(x))
		p.Elem().Set(reflect.ValueOf(x))
		return p.Interface(), nil
	}
	v := reflect.ValueOf(tv.V)
	switch tv.T {
	case "nil":
		return nil, nil
	case "[]uint8":
		switch b := tv.V.(type) {
		case []byte:
			return b, nil
		case string:
			return []byte(b), nil
		}
	case "time.UTC", "time.Local":
		t, ok := tv.V.(time.Time)
		if s, isText := tv.V.(string); isText {
			p, err := time.Parse(time.RFC3339Nano, s)
			t, ok = p, err == nil
		}
		if ok && tv.T == "time.UTC" {
			return t.UTC(), nil
		} else if ok {
			return t.Local(), nil
		}
	default:
		// Numbers come back as whatever width the codec chose: convert
		// them, and bools and strings, to the type they were.
		if t, ok := typedKinds[tv.T]; ok && v.IsValid() && v.CanConvert(t) && (v.Kind() == reflect.String) == (t.Kind() == reflect.String) {
			return v.Convert(t).Interface(), nil
		}
	}
	return nil, fmt.Errorf("%w: %s from %T", errUntyped, tv.T, tv.V)
}
