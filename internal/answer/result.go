package answer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/dogpile-go/dogpile/internal/mpack"
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

// Result is what a creator makes: the answer itself, for the caller whose
// query made it, and its encoding, for everyone else. It implements
// region.Payloader, so the region stores the encoding as it is.
type Result struct {
	fresh reflect.Value // pointer to the value the query scanned
	rows  int64         // the query's RowsAffected
	raw   []byte        // the encoding; nil when it cannot be restored value for value
}

// NewResult encodes the answer fresh (a pointer to what the query scanned,
// which nobody writes afterwards) with codec c.
func NewResult(c region.Codec, fresh reflect.Value, rows int64) *Result {
	return &Result{fresh: fresh, rows: rows, raw: encodeResult(c, fresh, rows)}
}

// Payload implements region.Payloader: ok is false for an answer that
// cannot be stored.
func (q *Result) Payload() ([]byte, bool) { return q.raw, q.raw != nil }

// Rows returns the answer's RowsAffected.
func (q *Result) Rows() int64 { return q.rows }

// For returns the answer for one of the callers the region hands it to
// (region.Loader's Adopt), or false when that caller must run its own
// query. This is the one rule of who gets which copy:
//
//   - the caller whose own query made an answer that could be encoded takes
//     it as it is: the others decode their own from the payload, so nobody
//     else ever reads it;
//   - an answer that could not be encoded reaches every caller that waited
//     for it, so each takes a deep copy;
//   - when such an answer cannot be copied either, the other callers refuse
//     it (and run their own query), and its maker keeps the original, which
//     nobody else then reads.
func (q *Result) For(own bool) (reflect.Value, bool) {
	answer := q.fresh.Elem()
	if own && q.raw != nil {
		return answer, true
	}
	if c, ok := copyShared(answer); ok {
		return c, true
	}
	return answer, own
}

// Fill sets dest (addressable, of the answer's type) to the answer as For
// gives it to this caller, and reports whether it did. Rows scanned into a
// map or []map destination are merged into it as GORM's scan does.
func (q *Result) Fill(dest reflect.Value, own bool) bool {
	answer, ok := q.For(own)
	if !ok {
		return false
	}
	if t := dest.Type(); t == mapType || t == mapSliceType {
		_ = mergeMaps(dest, rowsOf(answer))
		return true
	}
	dest.Set(answer)
	return true
}

// Slice returns the answer, a slice, as For gives it to this caller, ready
// to be copied into a window of a larger destination.
func (q *Result) Slice(own bool) (Slice, bool) {
	v, ok := q.For(own)
	if !ok {
		return Slice{}, false
	}
	return Slice{n: v.Len(), own: v}, true
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

// compactUnmarshal decodes what compactMarshal wrote into v.
func compactUnmarshal(b []byte, v any) error {
	unread, err := mpack.Decode(b, v, false)
	if err == nil && unread != 0 {
		err = errResultFormat
	}
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
