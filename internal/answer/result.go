package answer

import (
	"bytes"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
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
//	byte     how times are restored (timesAsDecoded, timesUTC, timesZoned)
//	byte     how the destination is encoded (destTypedMaps, destCompact,
//	         destRows)
//	         with timesZoned, the zone block (zones.go)
//	rest     the destination as msgpack (structs as arrays), as typed maps,
//	         or as the rows the database sent
//
// so that a hit fills the destination, RowsAffected and the not-found error
// exactly as the query did.
const resultFormat = 1

const (
	timesAsDecoded byte = iota // the codec already restores them (or there are none)
	timesUTC                   // every time was in UTC: convert after decoding
	timesZoned                 // the zone block says where each time was
)

const (
	destByCodec   byte = iota // no longer written: a codec other than msgpack stores rows
	destTypedMaps             // map[string]any rows, with each value's Go type kept
	destCompact               // the destination's own type, msgpack with structs as arrays
	destRows                  // the database's rows, scanned again on a hit (carry.go)
)

var errResultFormat = errors.New("dogpile: cached answer of another format")

// Result is what a creator makes: the answer itself, for the caller whose
// query made it, and its encoding, for everyone else. It implements
// region.Payloader, so the region stores the encoding as it is.
type Result struct {
	fresh reflect.Value // pointer to the value the query scanned
	rows  int64         // the query's RowsAffected
	raw   []byte        // the encoding; nil when the answer is not stored
	err   error         // the scan's error, given with the answer
	why   string        // why raw is nil
}

// Reasons an answer is not stored (Result.Why).
const (
	// WhyScanError: the query failed while its rows were scanned. The
	// callers get what GORM gives (the rows scanned and the error).
	WhyScanError = "scan error"
	// WhyUnencodable: the codec could not encode the answer.
	WhyUnencodable = "unencodable value"
	// WhyUntypedValue: a value held in a map row, or sent by the driver,
	// is of a type the cache cannot restore exactly.
	WhyUntypedValue = "value of an unrestorable type"
)

// NewResult encodes an answer: fresh points to what the query
// scanned (which nobody writes afterwards), rows is its RowsAffected, and
// sent the rows the database sent, when StoredAsRows says that is how
// answers of fresh's type are kept (nil otherwise). scanErr is an error the
// scan returned: the answer is then given to the callers with that error,
// and not stored.
func NewResult(fresh reflect.Value, rows int64, sent *Rows, scanErr error) *Result {
	q := &Result{fresh: fresh, rows: rows, err: scanErr}
	if scanErr != nil {
		q.why = WhyScanError
		return q
	}
	q.raw, q.why = encodeResult(fresh, rows, sent)
	return q
}

// Payload implements region.Payloader: an answer that is not stored gives
// an error saying why (wrapping region.ErrPartial for a scan that failed,
// region.ErrUnencodable otherwise).
func (q *Result) Payload() ([]byte, error) {
	switch {
	case q.raw != nil:
		return q.raw, nil
	case q.why == WhyScanError:
		return nil, fmt.Errorf("%w: %w", region.ErrPartial, q.err)
	}
	return nil, fmt.Errorf("%w: %s", region.ErrUnencodable, q.why)
}

// Why returns why the answer is not stored, or "" when it is.
func (q *Result) Why() string { return q.why }

// Rows returns the answer's RowsAffected.
func (q *Result) Rows() int64 { return q.rows }

// Err returns the error the query's scan gave with the answer, if any.
func (q *Result) Err() error { return q.err }

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

// encodeResult encodes the answer in fresh (a pointer), or returns nil and
// the reason when it cannot be restored value for value.
func encodeResult(fresh reflect.Value, rows int64, sent *Rows) ([]byte, string) {
	b := []byte{resultFormat}
	b = binary.AppendUvarint(b, uint64(rows))
	t := fresh.Elem().Type()
	switch {
	case t == mapType || t == mapSliceType:
		body, err := encodeTypedMaps(fresh.Elem())
		if err != nil {
			return nil, whyOf(err)
		}
		return append(append(b, timesAsDecoded, destTypedMaps), body...), ""
	case sent != nil:
		body, err := sent.encode()
		if err != nil {
			return nil, whyOf(err)
		}
		return append(append(b, timesAsDecoded, destRows), body...), ""
	}
	// Structs are written as arrays rather than maps of field names: a third
	// of the size and much faster to read. It is safe because the key holds
	// the type's fingerprint, so bytes are only ever read back into the same
	// struct shape.
	mode, zones := timeModeOf(t, fresh.Elem())
	b = append(b, mode, destCompact)
	if mode == timesZoned {
		b = zones.appendBlock(b)
	}
	body, err := compactMarshal(fresh.Interface())
	if err != nil {
		return nil, WhyUnencodable
	}
	return append(b, body...), ""
}

// whyOf names the reason an encoding error gives.
func whyOf(err error) string {
	if errors.Is(err, errUntyped) {
		return WhyUntypedValue
	}
	return WhyUnencodable
}

// timeModeOf says how the times in v (of type t) are restored, with the
// zone block when they are in several locations or in others than UTC and
// Local.
func timeModeOf(t reflect.Type, v reflect.Value) (byte, *zoneRecorder) {
	w := timeWalkerFor(t)
	if w == nil {
		return timesAsDecoded, nil
	}
	zr := &zoneRecorder{}
	w(v, zr.add)
	switch {
	case zr.exact || (zr.utc > 0 && zr.local > 0):
		return timesZoned, zr
	case zr.utc > 0:
		return timesUTC, nil
	}
	return timesAsDecoded, nil
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

// Rescanner scans rows the database sent into a destination, as the query's
// own scan did. The GORM plugin's loaders implement it with GORM's scan; it
// is how answers stored as rows (StoredAsRows) are read back.
type Rescanner interface {
	// Rescan fills dest (addressable) from rows, and closes them.
	Rescan(dest reflect.Value, rows *sql.Rows) error
}

// decodeResult fills dest (addressable) from b and returns RowsAffected; rs
// reads answers stored as rows.
func decodeResult(b []byte, dest reflect.Value, rs Rescanner) (int64, error) {
	rows, mode, kind, body, err := resultHeader(b)
	if err != nil {
		return 0, err
	}
	switch kind {
	case destTypedMaps:
		if err := decodeTypedMaps(body, dest); err != nil {
			return 0, err
		}
	case destRows:
		if err := decodeRows(body, dest, rs); err != nil {
			dest.SetZero()
			return 0, err
		}
	case destCompact:
		var za *zoneApplier
		if mode == timesZoned {
			if za, body, err = parseZoneBlock(body); err != nil {
				return 0, err
			}
		}
		// Decode in place over a zeroed destination, as a fresh scan would
		// fill it; on failure leave it zeroed, never half-written.
		dest.SetZero()
		err = compactUnmarshal(body, dest.Addr().Interface())
		if err == nil {
			err = restoreTimes(dest, mode, za)
		}
		if err != nil {
			dest.SetZero()
			return 0, err
		}
	default:
		return 0, errResultFormat
	}
	return rows, nil
}

// restoreTimes puts the times of a decoded dest back where they were.
func restoreTimes(dest reflect.Value, mode byte, za *zoneApplier) error {
	if mode == timesAsDecoded {
		return nil
	}
	w := timeWalkerFor(dest.Type())
	switch {
	case w == nil:
		return nil
	case mode == timesUTC:
		w(dest, toUTC)
		return nil
	case mode == timesZoned && za != nil:
		w(dest, za.apply)
		if za.err == nil && len(za.refs) != 0 {
			za.err = errZoneBlock
		}
		return za.err
	}
	return errResultFormat
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
