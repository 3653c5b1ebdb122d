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

// Key derivation. A FromCache entry's key is the SHA-256 of everything that
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
const keyVersion = "dogpile-key-2"

// keyBuffers recycles the buffer a key is hashed from.
var keyBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func (p *Plugin) cacheKey(db *gorm.DB, fc *fromCache, sc *scanned, sql string, vars []any) string {
	shape := p.shapeOf(db, fc, sc, sql)
	bp := keyBuffers.Get().(*[]byte)
	b := append((*bp)[:0], shape[:]...)
	b = append(b, 'V')
	b = binary.AppendUvarint(b, uint64(len(vars)))
	for _, v := range vars {
		b = appendValue(b, v)
	}
	sum := sha256.Sum256(b)
	*bp = b
	keyBuffers.Put(bp)
	var out [2 + 43]byte
	out[0], out[1] = 'q', ':'
	base64.RawURLEncoding.Encode(out[2:], sum[:])
	return string(out[:])
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
func (p *Plugin) shapeOf(db *gorm.DB, fc *fromCache, sc *scanned, sql string) [32]byte {
	k := shapeKey{sc, fc.region, fc.name, db.Dialector.Name(), db.Statement.ReflectValue.Type(), db.Statement.Schema}
	// Most SQL texts are run with one shape: remember the last one on the
	// scanned text itself, before the shared map.
	if m := sc.lastShape.Load(); m != nil && m.key == k {
		return m.sum
	}
	if v, ok := p.shapes.m.Load(k); ok {
		sum := v.([32]byte)
		sc.lastShape.Store(&shapeMemo{k, sum})
		return sum
	}
	var b []byte
	b = appendPart(b, 'K', keyVersion)
	b = appendPart(b, 'R', fc.region)
	b = appendPart(b, 'D', k.dialect)
	b = appendPart(b, 'S', sql)
	b = appendPart(b, 'T', fingerprint(k.dest, k.schema))
	b = appendPart(b, 'N', fc.name)
	sum := sha256.Sum256(b)
	if p.shapes.n.Load() < maxScans {
		if _, loaded := p.shapes.m.LoadOrStore(k, sum); !loaded {
			p.shapes.n.Add(1)
		}
	}
	sc.lastShape.Store(&shapeMemo{k, sum})
	return sum
}

// shapeMemo is a query shape's hash, remembered on its scanned SQL.
type shapeMemo struct {
	key shapeKey
	sum [32]byte
}

func appendPart(b []byte, tag byte, s string) []byte {
	b = append(b, tag)
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendValue appends a bind value with its type.
func appendValue(b []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(b, 'n')
	case string:
		return appendPart(b, 's', x)
	case []byte:
		if x == nil {
			return append(b, 'N') // a nil []byte is sent as NULL
		}
		return appendPart(b, 'b', string(x))
	case bool:
		if x {
			return append(b, 't')
		}
		return append(b, 'f')
	case int:
		return appendInt(b, 'i', int64(x))
	case int8:
		return appendInt(b, '1', int64(x))
	case int16:
		return appendInt(b, '2', int64(x))
	case int32:
		return appendInt(b, '4', int64(x))
	case int64:
		return appendInt(b, '8', x)
	case uint:
		return appendInt(b, 'u', int64(x))
	case uint8:
		return appendInt(b, '!', int64(x))
	case uint16:
		return appendInt(b, '@', int64(x))
	case uint32:
		return appendInt(b, '$', int64(x))
	case uint64:
		return appendInt(b, '*', int64(x))
	case float32:
		return appendInt(b, 'g', int64(math.Float32bits(x)))
	case float64:
		return appendInt(b, 'd', int64(math.Float64bits(x)))
	case time.Time:
		b = appendInt(b, 'T', x.Unix())
		b = binary.BigEndian.AppendUint32(b, uint32(x.Nanosecond()))
		name, offset := x.Zone()
		b = appendPart(b, 'z', x.Location().String()+"|"+name)
		return binary.BigEndian.AppendUint32(b, uint32(int32(offset)))
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
// address, which a later query may reuse for another value.
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
	}
	// Named types of basic kinds (type Status int), structs and anything
	// else: the type and its Go-syntax representation.
	return appendPart(b, 'x', fmt.Sprintf("%T|%#v", rv.Interface(), rv.Interface()))
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
