package answer

import (
	"database/sql"
	"encoding"
	"reflect"
	"strings"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// Which answers the codec can carry. A destination is encoded with the codec
// (compact msgpack by default) when every value GORM scans into it survives
// the trip: the codec writes exported fields only, so a column type that
// keeps its state in unexported fields (type Money struct{ cents int64 }
// with Scan and Value methods) would come back as its zero value. Such
// destinations are stored as the rows the database sent instead, the driver
// values as its driver returned them, and every hit scans those rows again
// with the query's own scan (Rescanner): what round-trips through the
// database round-trips through the cache.
//
// The decision is made once per destination type, from its Go structure:
//
//   - a struct GORM fills field by field (a model, an embedded struct, an
//     association) is carried when its exported fields are; its unexported
//     fields are never filled by a scan and do not count;
//   - a type GORM scans one column into (one implementing sql.Scanner or
//     GORM's SerializerInterface, or a field with a serializer tag) is
//     carried only when every part of it is
//     exported, or when it marshals itself losslessly (msgpack.CustomEncoder,
//     msgpack.Marshaler or encoding.BinaryMarshaler, with the matching
//     unmarshaler). A text form is not trusted to be exact (decimal's
//     NullDecimal drops its scale in MarshalText), and msgpack encodes a
//     type that has one with it: a type with encoding.TextMarshaler and none
//     of the others is not carried;
//   - an interface, a func or a channel is never carried exactly, nor is a
//     field the codec is told to skip (msgpack:"-").

var (
	scannerType         = reflect.TypeOf((*sql.Scanner)(nil)).Elem()
	customEncoderType   = reflect.TypeOf((*msgpack.CustomEncoder)(nil)).Elem()
	customDecoderType   = reflect.TypeOf((*msgpack.CustomDecoder)(nil)).Elem()
	mpMarshalerType     = reflect.TypeOf((*msgpack.Marshaler)(nil)).Elem()
	mpUnmarshalerType   = reflect.TypeOf((*msgpack.Unmarshaler)(nil)).Elem()
	binaryMarshalerType = reflect.TypeOf((*encoding.BinaryMarshaler)(nil)).Elem()
	binaryUnmarshaler   = reflect.TypeOf((*encoding.BinaryUnmarshaler)(nil)).Elem()
	textMarshalerType   = reflect.TypeOf((*encoding.TextMarshaler)(nil)).Elem()
)

var asRows sync.Map // reflect.Type → bool

// StoredAsRows reports whether answers of destination type t are stored as
// the database's rows (and scanned again on every hit) because the answer
// format (msgpack, whatever the region's codec) cannot carry t exactly. Map
// destinations never are (they are stored as typed values).
func StoredAsRows(t reflect.Type) bool {
	if t == mapType || t == mapSliceType {
		return false
	}
	if v, ok := asRows.Load(t); ok {
		return v.(bool)
	}
	rows := !carriedModel(t, map[reflect.Type]bool{})
	asRows.Store(t, rows)
	return rows
}

// carriedModel reports whether the codec carries t, a type GORM fills
// field by field (or a slice or pointer of one).
func carriedModel(t reflect.Type, seen map[reflect.Type]bool) bool {
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Array:
		if t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8 {
			return carriedValue(t, seen) // []byte, json.RawMessage, net.IP…
		}
		return carriedModel(t.Elem(), seen)
	case reflect.Map:
		return carriedValue(t, seen)
	case reflect.Struct:
	default:
		return carriedValue(t, seen)
	}
	if t == timeType || isColumnType(t) {
		return carriedValue(t, seen)
	}
	if seen[t] {
		return true
	}
	seen[t] = true
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() && !sf.Anonymous {
			continue // never filled by a scan
		}
		if gormIgnored(sf.Tag.Get("gorm")) {
			continue // never filled by a scan either
		}
		if sf.Tag.Get("msgpack") == "-" {
			return false
		}
		if strings.Contains(sf.Tag.Get("gorm"), "serializer:") {
			if !carriedValue(sf.Type, map[reflect.Type]bool{}) {
				return false
			}
			continue
		}
		if !carriedModel(sf.Type, seen) {
			return false
		}
	}
	return true
}

// gormIgnored reports a field GORM neither reads nor writes (gorm:"-" or
// gorm:"-:all").
func gormIgnored(tag string) bool {
	for _, part := range strings.Split(tag, ";") {
		if p := strings.TrimSpace(part); p == "-" || p == "-:all" {
			return true
		}
	}
	return false
}

// isColumnType reports a type GORM scans one column into: an sql.Scanner,
// or a type that serializes itself (GORM's schema.SerializerInterface,
// whose Scan takes the field and the database value); both have a method
// called Scan.
func isColumnType(t reflect.Type) bool {
	if t.Implements(scannerType) || reflect.PointerTo(t).Implements(scannerType) {
		return true
	}
	_, ok := reflect.PointerTo(t).MethodByName("Scan")
	return ok
}

// carriedValue reports whether the codec carries every part of t exactly.
func carriedValue(t reflect.Type, seen map[reflect.Type]bool) bool {
	if t == timeType || marshalsItself(t) {
		return true
	}
	if implements(t, textMarshalerType) {
		return false // msgpack would encode it as text, which may not be exact
	}
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64, reflect.String:
		return true
	case reflect.Pointer, reflect.Slice, reflect.Array:
		return carriedValue(t.Elem(), seen)
	case reflect.Map:
		// The time walker does not visit maps (their order is not fixed),
		// so a time in one would come back in Local.
		return !holdsTime(t, map[reflect.Type]bool{}) && carriedValue(t.Key(), seen) && carriedValue(t.Elem(), seen)
	case reflect.Struct:
		if seen[t] {
			return true
		}
		seen[t] = true
		for i := range t.NumField() {
			sf := t.Field(i)
			if !sf.IsExported() || sf.Tag.Get("msgpack") == "-" || !carriedValue(sf.Type, seen) {
				return false
			}
		}
		return true
	}
	return false // interfaces, funcs, channels, complex numbers, unsafe pointers
}

// holdsTime reports whether values of t can hold a time.Time.
func holdsTime(t reflect.Type, seen map[reflect.Type]bool) bool {
	if t == timeType {
		return true
	}
	if seen[t] {
		return false
	}
	seen[t] = true
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Array:
		return holdsTime(t.Elem(), seen)
	case reflect.Map:
		return holdsTime(t.Key(), seen) || holdsTime(t.Elem(), seen)
	case reflect.Struct:
		for i := range t.NumField() {
			if holdsTime(t.Field(i).Type, seen) {
				return true
			}
		}
	}
	return false
}

// implements reports whether t or *t implements the interface iface.
func implements(t, iface reflect.Type) bool {
	return t.Implements(iface) || reflect.PointerTo(t).Implements(iface)
}

// marshalsItself reports a type msgpack encodes and decodes through its own
// lossless methods. msgpack prefers these in this order, before
// encoding.TextMarshaler, so a type that has one of them is encoded with it.
func marshalsItself(t reflect.Type) bool {
	pt := reflect.PointerTo(t)
	impl := func(enc, dec reflect.Type) bool {
		return (t.Implements(enc) || pt.Implements(enc)) && pt.Implements(dec)
	}
	return impl(customEncoderType, customDecoderType) ||
		impl(mpMarshalerType, mpUnmarshalerType) ||
		impl(binaryMarshalerType, binaryUnmarshaler)
}
