package dogpile

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"

	"github.com/dogpile-go/dogpile/internal/answer"
	"github.com/dogpile-go/dogpile/region"
)

// The per-parent loader of RelationshipCache: it reads the entries of a
// preload's parents in one round trip, queries the database for the parents
// that have none, and assembles the children into the preload's
// destination. relationcache.go decides which preloads it serves.

// relLoader loads the children of many parents, one entry per parent. Like
// queryLoader, it captures in the caller's goroutine all that Create needs.
type relLoader struct {
	codec    region.Codec
	shape    stmtShape
	in       clause.IN
	inAt     int
	fields   []*schema.Field     // the child's fields that hold the parent key
	byPK     *schema.Field       // set for a many2many target phase: results go in its order
	destType reflect.Type        // the slice type GORM scans children into
	keys     []string            // caller keys, one per parent, in IN order
	values   map[string]any      // caller key → the parent key value(s) of IN
	keyTags  map[string][]string // caller key → its row tag

	// Used only in the caller's goroutine.
	memo  *answer.Memo
	dest  reflect.Value
	parts map[string]answer.Slice // caller key → its children
}

func newRelLoader(db *gorm.DB, r *region.Region, fc *fromCache, in *clause.IN, inAt int, path, phase string) *relLoader {
	stmt := db.Statement
	cols := columnNames(in.Column)
	fields := make([]*schema.Field, len(cols))
	for i, c := range cols {
		if fields[i] = stmt.Schema.LookUpField(c); fields[i] == nil {
			return nil
		}
	}
	l := &relLoader{
		codec: r.Codec(), shape: captureShape(stmt), in: *in, inAt: inAt, fields: fields,
		destType: stmt.ReflectValue.Type(), dest: stmt.ReflectValue,
		values: make(map[string]any, len(in.Values)), keyTags: make(map[string][]string, len(in.Values)),
		parts: make(map[string]answer.Slice, len(in.Values)),
	}
	if phase == "target" {
		l.byPK = stmt.Schema.PrimaryFields[0]
	}
	// The shape of the query without its parent keys: the relation, the
	// conditions, the columns, the destination.
	sql, vars := l.shape.build(l.withIN(clause.Expr{SQL: "/* dogpile: parent key */"}))
	shape := shapeParts{
		region: fc.region, dialect: db.Dialector.Name(), path: path + "#" + phase,
		sql: sql, vars: vars, fingerprint: fingerprint(l.destType, stmt.Schema),
	}.digest()
	// Each parent's key hashes the shape's digest with its key value(s).
	var buf []byte
	tagPrefix := rowTagPrefix(stmt.Schema.Table, cols)
	tags := make([]string, len(in.Values)) // one array for every parent's tag list
	var one [1]any
	var tag []byte
	for i, v := range in.Values {
		one[0] = v
		parts := one[:]
		if tuple, ok := v.([]any); ok {
			parts = tuple
		}
		var k string
		k, buf = parentKey(buf, shape, parts)
		if _, dup := l.values[k]; dup {
			continue
		}
		l.keys = append(l.keys, k)
		l.values[k] = v
		tag = appendKeyString(append(tag[:0], tagPrefix...), parts...)
		tags[i] = string(tag)
		l.keyTags[k] = tags[i : i+1 : i+1]
	}
	return l
}

// withIN returns the statement's clauses with the preload's IN replaced.
func (l *relLoader) withIN(e clause.Expression) map[string]clause.Clause {
	clauses := make(map[string]clause.Clause, len(l.shape.clauses))
	for k, c := range l.shape.clauses {
		clauses[k] = c
	}
	c := clauses["WHERE"]
	w := c.Expression.(clause.Where)
	exprs := append([]clause.Expression(nil), w.Exprs...)
	exprs[l.inAt] = e
	c.Expression = clause.Where{Exprs: exprs}
	clauses["WHERE"] = c
	return clauses
}

// errUnmatchedChild is Create's answer when a row of the preload query
// matches none of the parents asked for: nothing is cached, and the
// preload goes to GORM, as without the cache.
var errUnmatchedChild = errors.New("dogpile: preloaded row matches no parent")

// Create queries the children of the parents in keys only.
func (l *relLoader) Create(ctx context.Context, keys []string) (map[string]any, error) {
	in := l.in
	in.Values = make([]any, len(keys))
	for i, k := range keys {
		in.Values[i] = l.values[k]
	}
	shape := l.shape
	shape.ctx = ctx
	sql, vars := shape.build(l.withIN(in))
	fresh := reflect.New(l.destType)
	tx := newScanner(ctx, shape.config, shape.pool, shape.schema, shape.stmt, fresh)
	// A preload that fails fails its statement, whatever it scanned (as
	// GORM's preload returns the error before assigning anything).
	sent, _, err := runScan(ctx, tx, shape.pool, sql, vars, answer.StoredAsRows(l.destType))
	if err != nil {
		return nil, err
	}
	// One slice per parent, in the order the database returned the rows.
	byKey := make(map[string]string, len(keys)) // parent key string → caller key
	for _, k := range keys {
		byKey[keyString(l.parts0(k)...)] = k
	}
	groups := make(map[string]reflect.Value, len(keys))
	for _, k := range keys {
		groups[k] = reflect.MakeSlice(l.destType, 0, 0)
	}
	var rowsOf map[string][]int // caller key → its rows in sent
	if sent != nil {
		rowsOf = make(map[string][]int, len(keys))
	}
	all := fresh.Elem()
	for i := 0; i < all.Len(); i++ {
		elem := all.Index(i)
		vals := make([]any, len(l.fields))
		for j, f := range l.fields {
			vals[j], _ = f.ValueOf(ctx, reflect.Indirect(elem))
		}
		k, ok := byKey[keyString(vals...)]
		if !ok {
			// A child the entries cannot hold: its key was not selected, or
			// is of another type than the parents'. GORM's own preload
			// decides what that means.
			return nil, errUnmatchedChild
		}
		groups[k] = reflect.Append(groups[k], elem)
		if rowsOf != nil {
			rowsOf[k] = append(rowsOf[k], i)
		}
	}
	out := make(map[string]any, len(keys))
	for k, g := range groups {
		ptr := reflect.New(l.destType)
		ptr.Elem().Set(g)
		var own *answer.Rows
		if sent != nil {
			own = sent.Pick(rowsOf[k])
		}
		out[k] = answer.NewResult(ptr, int64(g.Len()), own, nil)
	}
	return out, nil
}

// parts0 returns the parent key value(s) of caller key k.
func (l *relLoader) parts0(k string) []any {
	v := l.values[k]
	if tuple, ok := v.([]any); ok {
		return tuple
	}
	return []any{v}
}

// Decode reads one parent's children. Children the memo remembers are taken
// as they are, to be copied once into the destination by assemble.
func (l *relLoader) Decode(k string, c region.Codec, payload []byte) error {
	part, err := l.memo.DecodeSlice(k, payload, l.destType, stmtRescanner{l.shape.stmt})
	if err != nil {
		return err
	}
	l.parts[k] = part
	return nil
}

// Adopt takes one parent's children as Create made them (answer.Result.For
// says which callers copy them).
func (l *relLoader) Adopt(k string, v any, own bool) bool {
	part, ok := v.(*answer.Result).Slice(own)
	if ok {
		l.parts[k] = part
	}
	return ok
}

// assemble puts every parent's children into the destination, parents in
// the order of the query's IN, and returns how many there are. A many2many's
// target rows are shared between parents: they are put in primary-key order
// (cacheablePreload allows nothing else).
func (l *relLoader) assemble(h *relHandoff) int64 {
	n := 0
	for _, part := range l.parts {
		n += part.Len()
	}
	out := reflect.MakeSlice(l.destType, n, n)
	// Children that are pointers are copied into one array, and a handoff
	// can then give parents windows of it.
	var arr reflect.Value
	if l.destType.Elem().Kind() == reflect.Pointer {
		arr = reflect.MakeSlice(reflect.SliceOf(l.destType.Elem().Elem()), n, n)
	}
	at := 0
	for _, k := range l.keys {
		part, ok := l.parts[k]
		if !ok {
			continue
		}
		dst := out.Slice(at, at+part.Len())
		var win reflect.Value
		if arr.IsValid() {
			win = arr.Slice(at, at+part.Len())
		}
		part.CopyTo(dst, win)
		if h != nil {
			h.groups = append(h.groups, relGroup{value: l.values[k], n: part.Len()})
		}
		at += part.Len()
	}
	if h != nil {
		h.arr, h.done = arr, true
	}
	if l.byPK != nil {
		sort.SliceStable(out.Interface(), func(i, j int) bool {
			a, _ := l.byPK.ValueOf(context.Background(), reflect.Indirect(out.Index(i)))
			b, _ := l.byPK.ValueOf(context.Background(), reflect.Indirect(out.Index(j)))
			return lessKey(a, b)
		})
	}
	l.dest.Set(out)
	return int64(out.Len())
}

// lessKey orders primary key values: numbers numerically, the rest as text.
func lessKey(a, b any) bool {
	ra, rb := reflect.Indirect(reflect.ValueOf(a)), reflect.Indirect(reflect.ValueOf(b))
	switch {
	case ra.CanInt() && rb.CanInt():
		return ra.Int() < rb.Int()
	case ra.CanUint() && rb.CanUint():
		return ra.Uint() < rb.Uint()
	}
	return fmt.Sprint(a) < fmt.Sprint(b)
}
