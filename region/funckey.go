package region

import (
	"bytes"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"
)

// The default keys of Func and FuncMulti. A key is the function's name,
// its namespace if it has one, the format version and its argument, typed:
//
//	users.get|v1|i:42                     Func "users.get", argument int 42
//	users.get#admin|v1|s2:42              namespace "admin", argument string "42"
//	users.search|v1|{Name=s5:alice,Age=i:30}  a struct argument
//
// In the name and the namespace, '%', '|' and '#' are escaped as %25, %7C
// and %23, so neither can run into the other. The argument is encoded by
// its type, each value self-delimiting, so that no two different arguments
// of one type share a key and values of different types never do either
// (1, "1", int64(1), true and nil all differ), the same in every process
// and every release that keeps FuncKeyVersion:
//
//	bool                   t or f
//	int, int8 ... int64    i:, i8:, i16:, i32:, i64: then the decimal value
//	uint ... uint64        u:, u8:, u16:, u32:, u64:, uptr: then the decimal value
//	float32, float64       f32:, f64: then the shortest decimal that reads back exactly
//	complex64, complex128  c64:, c128: then (re+imi)
//	string                 s, its length in bytes, ':' and its bytes as they are
//	[]byte, [N]byte        x and the bytes in hexadecimal; a nil []byte is n
//	time.Time              T: and the instant in UTC, RFC 3339 with nanoseconds;
//	                       outside UTC followed by @, the location's name (as a
//	                       string, without the s) and the offset in seconds
//	                       (+3600); the same for a type defined as time.Time
//	*time.Location         L and its name (as a string, without the s)
//	netip.Addr, netip.Prefix, netip.AddrPort, big.Int, big.Float, big.Rat
//	                       m and their MarshalText (as a string, without the s)
//	pointer                n when nil, else * and what it points to
//	slice, array           [ the elements, separated by commas ]; a nil slice is n
//	map                    { key=value pairs, sorted by the key's encoding,
//	                       separated by commas }; a nil map is n
//	struct                 { Name=value for each field but blank ones, exported
//	                       or not, in their order, separated by commas }
//	interface              n when nil, else the value as its dynamic type
//	                       encodes it, preceded, unless that type is a predeclared
//	                       one whose encoding names it (int, string, ...), by @,
//	                       the type's name with its package path (as a string,
//	                       without the s): type UserID int holding 1 is
//	                       @22:example.com/app.UserIDi:1
//
// A named type encodes as its underlying type: the function's argument type
// is fixed, so only the values inside interfaces need their type. Channels,
// functions and unsafe pointers cannot be keys, nor can values nested
// deeper than 64 levels (a cyclic pointer): Get returns an error for them.
// A key generator of one's own (KeyFunc) can replace all of this.
//
// Changing any of it changes keys: bump FuncKeyVersion with it, so that a
// deploy never misreads another format's entries (they are left to expire).

// FuncKeyVersion is the version of the default key format of Func and
// FuncMulti; it is part of every default key.
const FuncKeyVersion = "v1"

// maxKeyDepth bounds the nesting of an argument's values.
const maxKeyDepth = 64

// errKeyDepth is the error of an argument nested too deeply.
var errKeyDepth = errors.New("nested more than 64 levels deep (a cyclic pointer?)")

var keyNameEscaper = strings.NewReplacer("%", "%25", "|", "%7C", "#", "%23")

// funcKeyPrefix returns what every default key of a function starts with:
// its escaped name and namespace, and the format version.
func funcKeyPrefix(name, namespace string) string {
	p := keyNameEscaper.Replace(name)
	if namespace != "" {
		p += "#" + keyNameEscaper.Replace(namespace)
	}
	return p + "|" + FuncKeyVersion + "|"
}

// argEncoder appends the encoding of arg to b. It takes arg by value: a
// pointer given to a function value escapes, which would cost the hit path
// an allocation.
type argEncoder[A any] func(b []byte, arg A) ([]byte, error)

// newArgEncoder returns the encoder of arguments of type A: for the
// predeclared kinds, one that reads the value in place, without
// reflection; else the reflective one.
func newArgEncoder[A any]() argEncoder[A] {
	t := reflect.TypeFor[A]()
	if t.Kind() != reflect.Interface {
		if tag, ok := intTags[t.Kind()]; ok {
			return intEncoder[A](t.Kind(), tag)
		}
		switch t.Kind() {
		case reflect.String:
			return func(b []byte, arg A) ([]byte, error) {
				return appendKeyString(b, 's', *(*string)(unsafe.Pointer(&arg))), nil
			}
		case reflect.Bool:
			return func(b []byte, arg A) ([]byte, error) {
				return appendKeyBool(b, *(*bool)(unsafe.Pointer(&arg))), nil
			}
		}
	}
	return func(b []byte, arg A) ([]byte, error) {
		return appendKeyValue(b, reflect.ValueOf(&arg).Elem(), 0)
	}
}

// intEncoder returns the encoder of an integer type A of kind k.
func intEncoder[A any](k reflect.Kind, tag string) argEncoder[A] {
	switch k {
	case reflect.Int:
		return func(b []byte, arg A) ([]byte, error) {
			return appendKeyInt(b, tag, int64(*(*int)(unsafe.Pointer(&arg)))), nil
		}
	case reflect.Int8:
		return func(b []byte, arg A) ([]byte, error) {
			return appendKeyInt(b, tag, int64(*(*int8)(unsafe.Pointer(&arg)))), nil
		}
	case reflect.Int16:
		return func(b []byte, arg A) ([]byte, error) {
			return appendKeyInt(b, tag, int64(*(*int16)(unsafe.Pointer(&arg)))), nil
		}
	case reflect.Int32:
		return func(b []byte, arg A) ([]byte, error) {
			return appendKeyInt(b, tag, int64(*(*int32)(unsafe.Pointer(&arg)))), nil
		}
	case reflect.Int64:
		return func(b []byte, arg A) ([]byte, error) {
			return appendKeyInt(b, tag, *(*int64)(unsafe.Pointer(&arg))), nil
		}
	case reflect.Uint:
		return func(b []byte, arg A) ([]byte, error) {
			return appendKeyUint(b, tag, uint64(*(*uint)(unsafe.Pointer(&arg)))), nil
		}
	case reflect.Uint8:
		return func(b []byte, arg A) ([]byte, error) {
			return appendKeyUint(b, tag, uint64(*(*uint8)(unsafe.Pointer(&arg)))), nil
		}
	case reflect.Uint16:
		return func(b []byte, arg A) ([]byte, error) {
			return appendKeyUint(b, tag, uint64(*(*uint16)(unsafe.Pointer(&arg)))), nil
		}
	case reflect.Uint32:
		return func(b []byte, arg A) ([]byte, error) {
			return appendKeyUint(b, tag, uint64(*(*uint32)(unsafe.Pointer(&arg)))), nil
		}
	case reflect.Uint64:
		return func(b []byte, arg A) ([]byte, error) {
			return appendKeyUint(b, tag, *(*uint64)(unsafe.Pointer(&arg))), nil
		}
	}
	return func(b []byte, arg A) ([]byte, error) { // uintptr
		return appendKeyUint(b, tag, uint64(*(*uintptr)(unsafe.Pointer(&arg)))), nil
	}
}

// intTags are the tags of the integer kinds.
var intTags = map[reflect.Kind]string{
	reflect.Int: "i", reflect.Int8: "i8", reflect.Int16: "i16", reflect.Int32: "i32", reflect.Int64: "i64",
	reflect.Uint: "u", reflect.Uint8: "u8", reflect.Uint16: "u16", reflect.Uint32: "u32", reflect.Uint64: "u64",
	reflect.Uintptr: "uptr",
}

func appendKeyInt(b []byte, tag string, n int64) []byte {
	b = append(append(b, tag...), ':')
	return strconv.AppendInt(b, n, 10)
}

func appendKeyUint(b []byte, tag string, n uint64) []byte {
	b = append(append(b, tag...), ':')
	return strconv.AppendUint(b, n, 10)
}

func appendKeyBool(b []byte, v bool) []byte {
	if v {
		return append(b, 't')
	}
	return append(b, 'f')
}

// appendKeyString appends tag, the length of s, ':' and s.
func appendKeyString(b []byte, tag byte, s string) []byte {
	b = strconv.AppendInt(append(b, tag), int64(len(s)), 10)
	return append(append(b, ':'), s...)
}

var (
	timeType     = reflect.TypeFor[time.Time]()
	locationType = reflect.TypeFor[time.Location]()
	// textTypes are the types of the standard library that are keyed by
	// their MarshalText, a complete text form that their fields (private,
	// and free to change between Go releases) are not.
	textTypes = []reflect.Type{
		reflect.TypeFor[netip.Addr](), reflect.TypeFor[netip.Prefix](), reflect.TypeFor[netip.AddrPort](),
		reflect.TypeFor[big.Int](), reflect.TypeFor[big.Float](), reflect.TypeFor[big.Rat](),
	}
)

// appendTime appends a time: its instant in UTC, and its location and
// offset when it is not UTC.
func appendTime(b []byte, t time.Time) []byte {
	b = append(b, "T:"...)
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	if t.Location() == time.UTC {
		return b
	}
	_, offset := t.Zone()
	b = appendKeyString(b, '@', t.Location().String())
	if offset >= 0 {
		b = append(b, '+')
	}
	return strconv.AppendInt(b, int64(offset), 10)
}

// appendKeyValue appends the encoding of v, a value of the argument at the
// given depth of nesting.
func appendKeyValue(b []byte, v reflect.Value, depth int) ([]byte, error) {
	if depth > maxKeyDepth {
		return b, errKeyDepth
	}
	v = usable(v)
	t := v.Type()
	switch t {
	case timeType:
		return appendTime(b, v.Interface().(time.Time)), nil
	case locationType:
		return appendKeyString(b, 'L', v.Addr().Interface().(*time.Location).String()), nil
	}
	if t.Kind() == reflect.Struct && t.ConvertibleTo(timeType) {
		// A type defined as time.Time: its fields hold a monotonic reading
		// that differs between processes.
		return appendTime(b, v.Convert(timeType).Interface().(time.Time)), nil
	}
	if slices.Contains(textTypes, t) {
		text, err := v.Addr().Interface().(encoding.TextMarshaler).MarshalText()
		if err != nil {
			return b, fmt.Errorf("%s: %w", t, err)
		}
		return appendKeyString(b, 'm', string(text)), nil
	}
	k := t.Kind()
	if tag, ok := intTags[k]; ok {
		if k >= reflect.Uint && k <= reflect.Uintptr {
			return appendKeyUint(b, tag, v.Uint()), nil
		}
		return appendKeyInt(b, tag, v.Int()), nil
	}
	switch k {
	case reflect.Bool:
		return appendKeyBool(b, v.Bool()), nil
	case reflect.Float32:
		return strconv.AppendFloat(append(b, "f32:"...), v.Float(), 'g', -1, 32), nil
	case reflect.Float64:
		return strconv.AppendFloat(append(b, "f64:"...), v.Float(), 'g', -1, 64), nil
	case reflect.Complex64:
		return append(append(b, "c64:"...), strconv.FormatComplex(v.Complex(), 'g', -1, 64)...), nil
	case reflect.Complex128:
		return append(append(b, "c128:"...), strconv.FormatComplex(v.Complex(), 'g', -1, 128)...), nil
	case reflect.String:
		return appendKeyString(b, 's', v.String()), nil
	case reflect.Pointer:
		if v.IsNil() {
			return append(b, 'n'), nil
		}
		return appendKeyValue(append(b, '*'), v.Elem(), depth+1)
	case reflect.Interface:
		if v.IsNil() {
			return append(b, 'n'), nil
		}
		e := v.Elem()
		if et := e.Type(); et.PkgPath() != "" || et.Name() == "" {
			b = appendKeyString(b, '@', typeName(et))
		}
		return appendKeyValue(b, e, depth+1)
	case reflect.Slice, reflect.Array:
		return appendKeyList(b, v, depth)
	case reflect.Map:
		return appendKeyMap(b, v, depth)
	case reflect.Struct:
		return appendKeyStruct(b, v, depth)
	}
	return b, fmt.Errorf("a value of type %s cannot be part of a key", t)
}

// usable returns v, or a copy of it, in a form that can be read whole, even
// through methods: addressable (so that the fields of a struct are too) and
// not marked read-only. Fields that are not exported are read-only by
// reflection's rules; they are read in place, through their address, which
// every value reached from the argument has, except the elements of maps
// and the values in interfaces, which are copied first.
func usable(v reflect.Value) reflect.Value {
	switch {
	case !v.CanAddr():
		c := reflect.New(v.Type()).Elem()
		c.Set(v) // v is not read-only: its container was made usable
		return c
	case !v.CanInterface():
		return reflect.NewAt(v.Type(), unsafe.Pointer(v.UnsafeAddr())).Elem()
	}
	return v
}

// appendKeyList appends a slice or an array: bytes in hexadecimal, other
// elements in brackets.
func appendKeyList(b []byte, v reflect.Value, depth int) ([]byte, error) {
	if v.Kind() == reflect.Slice && v.IsNil() {
		return append(b, 'n'), nil
	}
	if v.Type().Elem().Kind() == reflect.Uint8 {
		if v.Kind() == reflect.Array {
			v = v.Slice(0, v.Len()) // usable made it addressable
		}
		return hex.AppendEncode(append(b, 'x'), v.Bytes()), nil
	}
	b = append(b, '[')
	for i := range v.Len() {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = appendKeyValue(b, v.Index(i), depth+1); err != nil {
			return b, err
		}
	}
	return append(b, ']'), nil
}

// appendKeyMap appends a map's pairs, sorted by the encoding of their keys.
func appendKeyMap(b []byte, v reflect.Value, depth int) ([]byte, error) {
	if v.IsNil() {
		return append(b, 'n'), nil
	}
	type pair struct{ k, v []byte }
	pairs := make([]pair, 0, v.Len())
	for it := v.MapRange(); it.Next(); {
		k, err := appendKeyValue(nil, it.Key(), depth+1)
		if err != nil {
			return b, err
		}
		val, err := appendKeyValue(nil, it.Value(), depth+1)
		if err != nil {
			return b, err
		}
		pairs = append(pairs, pair{k, val})
	}
	slices.SortFunc(pairs, func(x, y pair) int { return bytes.Compare(x.k, y.k) })
	b = append(b, '{')
	for i, p := range pairs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(append(append(b, p.k...), '='), p.v...)
	}
	return append(b, '}'), nil
}

// appendKeyStruct appends a struct's fields but the blank ones, by name.
func appendKeyStruct(b []byte, v reflect.Value, depth int) ([]byte, error) {
	t := v.Type()
	b = append(b, '{')
	first := true
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Name == "_" {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(append(b, f.Name...), '=')
		var err error
		if b, err = appendKeyValue(b, v.Field(i), depth+1); err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}

// typeName names a type with the import paths of its named parts, so that
// two types of the same name in different packages differ.
func typeName(t reflect.Type) string {
	if t.Name() != "" {
		if t.PkgPath() == "" {
			return t.Name()
		}
		return t.PkgPath() + "." + t.Name()
	}
	switch t.Kind() {
	case reflect.Pointer:
		return "*" + typeName(t.Elem())
	case reflect.Slice:
		return "[]" + typeName(t.Elem())
	case reflect.Array:
		return "[" + strconv.Itoa(t.Len()) + "]" + typeName(t.Elem())
	case reflect.Map:
		return "map[" + typeName(t.Key()) + "]" + typeName(t.Elem())
	case reflect.Struct:
		var sb strings.Builder
		sb.WriteString("struct{")
		for i := range t.NumField() {
			f := t.Field(i)
			if i > 0 {
				sb.WriteString("; ")
			}
			if !f.Anonymous {
				sb.WriteString(f.Name + " ")
			}
			sb.WriteString(typeName(f.Type))
			if f.Tag != "" {
				sb.WriteString(" " + strconv.Quote(string(f.Tag)))
			}
		}
		sb.WriteString("}")
		return sb.String()
	}
	return t.String()
}
