package dogpile

import (
	"crypto/sha256"
	"database/sql/driver"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"reflect"
	"strings"
	"sync"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"
)

// Key derivation: every key format of the plugin is written here. A
// FromCache entry's key is the SHA-256 of everything that
// decides its answer, each part tagged with its kind and length so that no
// two different inputs can run together:
//
//   - the key format version, the region and the dialect;
//   - the SQL text GORM built;
//   - every bind value with its Go type (1, "1", int64(1), nil and "" all
//     differ; times keep their instant and zone; driver.Valuer values are
//     keyed by what they send to the database, and by their type);
//   - the destination's type and a fingerprint of its structure and of the
//     model's schema, so that a struct changed by a deploy gets new keys
//     rather than decoding old bytes into a new shape;
//   - the WithKey name, if any.
//
// The parts that do not change between executions of one query (all but the
// bind values) are hashed once into the query's shape; the key is the hash of
// the shape and the bind values.
//
// A RelationshipCache entry's key is the hash of its shape (the same parts,
// with the preload path and the bind values of the preload's conditions in
// place of the WithKey name, and the parent keys left out of the SQL) and of
// its own parent's key value(s).
const keyVersion = "dogpile-key-3"

func (p *Plugin) cacheKey(db *gorm.DB, fc *fromCache, sc *scanned, sql string, vars []any) string {
	shape := p.shapeOf(db, fc, sc, sql)
	// The shape's digest and the bind values, hashed once. A key's bytes
	// fit the buffer on the stack unless its values are long.
	var buf [256]byte
	return entryKey('q', sha256.Sum256(appendValues(append(buf[:0], shape[:]...), vars)))
}

// shapeKey identifies a query's shape: everything in its key but the bind
// values. sc stands for the SQL text (and table) it was scanned from.
type shapeKey struct {
	sc      *scanned
	region  string
	name    string
	dialect string
	dest    reflect.Type
	schema  *schema.Schema
}

// shapeOf returns the hash of the query's shape, computed once.
func (p *Plugin) shapeOf(db *gorm.DB, fc *fromCache, sc *scanned, sql string) [sha256.Size]byte {
	k := shapeKey{sc, fc.region, fc.name, db.Dialector.Name(), db.Statement.ReflectValue.Type(), db.Statement.Schema}
	// Most SQL texts are run with one shape: remember the last one on the
	// scanned text itself, before the shared map.
	if m := sc.lastShape.Load(); m != nil && m.key == k {
		return m.sum
	}
	if sum, ok := p.shapes.load(k); ok {
		sc.lastShape.Store(&shapeMemo{k, sum})
		return sum
	}
	sum := shapeParts{
		region: fc.region, dialect: k.dialect, sql: sql,
		fingerprint: fingerprint(k.dest, k.schema), name: fc.name,
	}.digest()
	p.shapes.store(k, sum)
	sc.lastShape.Store(&shapeMemo{k, sum})
	return sum
}

// shapeMemo is a query shape's hash, remembered on its scanned SQL.
type shapeMemo struct {
	key shapeKey
	sum [sha256.Size]byte
}

// shapeParts is everything in a key but one execution's bind values, in the
// order it is hashed. A RelationshipCache shape (path set) also holds its
// preload path and the bind values of its conditions; a FromCache shape
// holds its WithKey name.
type shapeParts struct {
	region, dialect string
	path            string // RelationshipCache: the preload path and phase
	sql             string
	vars            []any // RelationshipCache: the conditions' bind values
	fingerprint     string
	name            string // FromCache: the WithKey name
}

// digest hashes the shape, each part tagged with its kind and length.
func (s shapeParts) digest() [sha256.Size]byte {
	rel := s.path != ""
	version := keyVersion
	if rel {
		version += "-rel"
	}
	b := appendPart(nil, 'K', version)
	b = appendPart(b, 'R', s.region)
	b = appendPart(b, 'D', s.dialect)
	if rel {
		b = appendPart(b, 'P', s.path)
	}
	b = appendPart(b, 'S', s.sql)
	if rel {
		b = appendValues(b, s.vars)
	}
	b = appendPart(b, 'T', s.fingerprint)
	if !rel {
		b = appendPart(b, 'N', s.name)
	}
	return sha256.Sum256(b)
}

// entryKey renders an entry's digest as its cache key: its kind ('q' for
// FromCache, 'r' for RelationshipCache), ':' and the digest in unpadded
// base64.
func entryKey(kind byte, sum [sha256.Size]byte) string {
	var k [2 + 43]byte
	k[0], k[1] = kind, ':'
	base64.RawURLEncoding.Encode(k[2:], sum[:])
	return string(k[:])
}

// parentKey returns the key of one parent's RelationshipCache entry: the
// shape's digest hashed with the parent's key value(s). buf is scratch
// space, returned for the next call.
func parentKey(buf []byte, shape [sha256.Size]byte, parts []any) (string, []byte) {
	buf = append(buf[:0], shape[:]...)
	for _, x := range parts {
		buf = appendValue(buf, x)
	}
	return entryKey('r', sha256.Sum256(buf)), buf
}

func appendPart(b []byte, tag byte, s string) []byte {
	b = append(b, tag)
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendValues appends bind values: 'V', how many, and each with its type.
// Values of the types appendPlain knows are appended to b itself, which
// may be on the caller's stack; only another type moves the bytes to the
// heap first (appendValue recurses, so what it is given escapes).
func appendValues(b []byte, vars []any) []byte {
	b = append(b, 'V')
	b = binary.AppendUvarint(b, uint64(len(vars)))
	for _, v := range vars {
		if nb, ok := appendPlain(b, v); ok {
			b = nb
			continue
		}
		b = appendValue(append(make([]byte, 0, 2*len(b)+64), b...), v)
	}
	return b
}

// appendPlain appends a bind value of a type that holds no other value
// (nil, strings, bytes, booleans, numbers, times) with its type, and
// reports whether v was one.
func appendPlain(b []byte, v any) ([]byte, bool) {
	switch x := v.(type) {
	case nil:
		return append(b, 'n'), true
	case string:
		return appendPart(b, 's', x), true
	case []byte:
		if x == nil {
			return append(b, 'N'), true // a nil []byte is sent as NULL
		}
		return appendPart(b, 'b', string(x)), true
	case bool:
		if x {
			return append(b, 't'), true
		}
		return append(b, 'f'), true
	case int:
		return appendInt(b, 'i', int64(x)), true
	case int8:
		return appendInt(b, '1', int64(x)), true
	case int16:
		return appendInt(b, '2', int64(x)), true
	case int32:
		return appendInt(b, '4', int64(x)), true
	case int64:
		return appendInt(b, '8', x), true
	case uint:
		return appendInt(b, 'u', int64(x)), true
	case uint8:
		return appendInt(b, '!', int64(x)), true
	case uint16:
		return appendInt(b, '@', int64(x)), true
	case uint32:
		return appendInt(b, '$', int64(x)), true
	case uint64:
		return appendInt(b, '*', int64(x)), true
	case float32:
		return appendInt(b, 'g', int64(math.Float32bits(x))), true
	case float64:
		return appendInt(b, 'd', int64(math.Float64bits(x))), true
	case time.Time:
		b = appendInt(b, 'T', x.Unix())
		b = binary.BigEndian.AppendUint32(b, uint32(x.Nanosecond()))
		name, offset := x.Zone()
		b = appendPart(b, 'z', x.Location().String())
		b = appendPart(b, 'Z', name)
		return binary.BigEndian.AppendUint32(b, uint32(int32(offset))), true
	}
	return b, false
}

// appendValue appends a bind value with its type.
func appendValue(b []byte, v any) []byte {
	if nb, ok := appendPlain(b, v); ok {
		return nb
	}
	switch x := v.(type) {
	case driver.Valuer:
		b = appendPart(b, 'v', reflect.TypeOf(v).String())
		sent, err := valueOf(x)
		if err != nil {
			return appendPart(b, 'e', err.Error())
		}
		return appendValue(b, sent)
	}
	return appendOther(b, reflect.ValueOf(v))
}

// appendOther appends a bind value of a type appendValue does not name.
// Pointers are keyed by their type and what they point at, which is what
// database/sql sends, and slices and arrays element by element: never by an
// address, which a later query may reuse for another value. Named types of
// basic kinds (type Status int) are keyed by their type and value; only
// other kinds (structs, maps, complex numbers) are formatted with fmt.
func appendOther(b []byte, rv reflect.Value) []byte {
	switch rv.Kind() {
	case reflect.Pointer:
		b = appendPart(b, 'p', rv.Type().String())
		if rv.IsNil() {
			return append(b, 'n')
		}
		return appendValue(b, rv.Elem().Interface())
	case reflect.Slice, reflect.Array:
		b = appendPart(b, 'X', rv.Type().String())
		if rv.Kind() == reflect.Slice && rv.IsNil() {
			return append(b, 'N')
		}
		b = binary.AppendUvarint(b, uint64(rv.Len()))
		for i := range rv.Len() {
			b = appendValue(b, rv.Index(i).Interface())
		}
		return b
	case reflect.Bool:
		b = appendNamed(b, rv.Type())
		if rv.Bool() {
			return append(b, 't')
		}
		return append(b, 'f')
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return appendInt(appendNamed(b, rv.Type()), 'i', rv.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return appendInt(appendNamed(b, rv.Type()), 'u', int64(rv.Uint()))
	case reflect.Float32, reflect.Float64:
		return appendInt(appendNamed(b, rv.Type()), 'd', int64(math.Float64bits(rv.Float())))
	case reflect.String:
		return appendPart(appendNamed(b, rv.Type()), 's', rv.String())
	}
	// Structs, maps and anything else: the type and its Go-syntax
	// representation.
	return appendPart(b, 'x', fmt.Sprintf("%T|%#v", rv.Interface(), rv.Interface()))
}

// appendNamed appends the identity of a named type of a basic kind: its
// package's import path and its name, which its value follows.
func appendNamed(b []byte, t reflect.Type) []byte {
	b = appendPart(b, 'k', t.PkgPath())
	return appendPart(b, 'K', t.Name())
}

func appendInt(b []byte, tag byte, n int64) []byte {
	b = append(b, tag)
	return binary.BigEndian.AppendUint64(b, uint64(n))
}

// valueOf calls Value, which user code may make panic on a nil receiver.
func valueOf(v driver.Valuer) (sent driver.Value, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("driver.Valuer panicked: %v", p)
		}
	}()
	return v.Value()
}

// fingerprints caches fingerprint by destination type and schema.
var fingerprints sync.Map // fingerprintKey → string

type fingerprintKey struct {
	t reflect.Type
	s *schema.Schema
}

// fingerprint describes the destination type's structure (field names, types
// and tags, recursively) and the model schema's table and columns.
func fingerprint(t reflect.Type, s *schema.Schema) string {
	k := fingerprintKey{t, s}
	if f, ok := fingerprints.Load(k); ok {
		return f.(string)
	}
	var sb strings.Builder
	describeType(&sb, t, map[reflect.Type]bool{})
	if s != nil {
		sb.WriteString("|schema:")
		sb.WriteString(s.Table)
		for _, f := range s.Fields {
			fmt.Fprintf(&sb, ";%s:%s:%s:%v", f.Name, f.DBName, f.FieldType, f.DataType)
		}
	}
	sum := sha256.Sum256([]byte(sb.String()))
	f := base64.RawURLEncoding.EncodeToString(sum[:16])
	fingerprints.Store(k, f)
	return f
}

func describeType(sb *strings.Builder, t reflect.Type, seen map[reflect.Type]bool) {
	sb.WriteString(t.String())
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Array:
		sb.WriteByte('<')
		describeType(sb, t.Elem(), seen)
		sb.WriteByte('>')
	case reflect.Map:
		sb.WriteByte('<')
		describeType(sb, t.Key(), seen)
		sb.WriteByte(',')
		describeType(sb, t.Elem(), seen)
		sb.WriteByte('>')
	case reflect.Struct:
		if seen[t] {
			return
		}
		seen[t] = true
		sb.WriteByte('{')
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			fmt.Fprintf(sb, "%s %q ", f.Name, f.Tag)
			describeType(sb, f.Type, seen)
			sb.WriteByte(';')
		}
		sb.WriteByte('}')
	}
}
