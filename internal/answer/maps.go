package answer

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
)

// Rows scanned into map[string]any or []map[string]any destinations, and
// the driver values of answers stored as rows. A codec alone would decode
// every integer held in an interface as int64 (JSON: as float64, losing
// digits past 2^53) and every time as Local, so each value is stored with
// the name of its Go type and converted back to it, always as msgpack,
// whatever the region's codec: these are the plugin's own format.

// typedValue keeps a map value's Go type across the codec, which on its own
// decodes every integer of an interface as int64 and every time as Local.
type typedValue struct {
	T string
	V any
	// For a time in a location other than UTC and Local ("time.Fixed" and
	// "time.Named"): the location's name, and a fixed zone's offset.
	Z string `json:",omitempty" msgpack:",omitempty"`
	O int    `json:",omitempty" msgpack:",omitempty"`
}

func encodeTypedMaps(v reflect.Value) ([]byte, error) {
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
	return compactMarshal(struct {
		Nil  bool
		Rows []map[string]typedValue
	}{isNil, out})
}

func decodeTypedMaps(b []byte, dest reflect.Value) error {
	var in struct {
		Nil  bool
		Rows []map[string]typedValue
	}
	if err := compactUnmarshal(b, &in); err != nil {
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
		if z := zoneOf(v); z.named {
			return typedValue{T: "time.Named", V: v, Z: z.name}, nil
		}
		z := zoneOf(v)
		return typedValue{T: "time.Fixed", V: v, Z: z.name, O: z.offset}, nil
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
		tv.T = elem
		x, err := fromTyped(tv)
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
	case "time.UTC", "time.Local", "time.Fixed", "time.Named":
		t, ok := tv.V.(time.Time)
		if s, isText := tv.V.(string); isText {
			p, err := time.Parse(time.RFC3339Nano, s)
			t, ok = p, err == nil
		}
		if !ok {
			break
		}
		switch tv.T {
		case "time.UTC":
			return t.UTC(), nil
		case "time.Local":
			return t.Local(), nil
		}
		return t.In(zoneSpec{name: tv.Z, offset: tv.O, named: tv.T == "time.Named"}.location()), nil
	default:
		// Numbers come back as whatever width the codec chose: convert
		// them, and bools and strings, to the type they were.
		if t, ok := typedKinds[tv.T]; ok && v.IsValid() && v.CanConvert(t) && (v.Kind() == reflect.String) == (t.Kind() == reflect.String) {
			return v.Convert(t).Interface(), nil
		}
	}
	return nil, fmt.Errorf("%w: %s from %T", errUntyped, tv.T, tv.V)
}
