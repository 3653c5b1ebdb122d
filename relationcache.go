package dogpile

import (
	"context"
	"crypto/sha256"
	"database/sql/driver"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/callbacks"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"

	"github.com/dogpile-go/dogpile/region"
)

// RelationshipCache returns a scope that caches the association at path
// (a Preload path such as "Posts" or "Posts.Comments") in the named region,
// one entry per parent:
//
//	db.Scopes(dogpile.RelationshipCache("Posts", "default")).Preload("Posts").Find(&users)
//
// GORM loads a preload with one query, WHERE fk IN (parent keys); with the
// scope, the keys already cached are read in one backend round trip and the
// database is asked only for the others. Preload conditions and custom
// preload functions are part of the key. A parent with no children is
// cached as empty. Entries depend on the child rows of their own parent: a
// write to a child row invalidates the parents it belonged to before and
// after the write; where that cannot be known (raw SQL, an Update over a
// WHERE clause) it invalidates the whole association. Naming a path that no
// Preload loads does nothing. Of the options, WithExpiration and
// IgnoreExpiration apply.
func RelationshipCache(path, regionName string, opts ...Option) func(*gorm.DB) *gorm.DB {
	fc := &fromCache{region: regionName}
	for _, o := range opts {
		o(fc)
	}
	return func(db *gorm.DB) *gorm.DB {
		rels := relOptions{path: fc}
		if v, ok := db.Statement.Settings.Load(relCacheKey{}); ok {
			for p, o := range v.(relOptions) {
				if p != path {
					rels[p] = o
				}
			}
		}
		db.Statement.Settings.Store(relCacheKey{}, rels)
		return db
	}
}

// relCacheKey is the statement setting RelationshipCache scopes store; it is
// copied into every preload statement.
type relCacheKey struct{}

// relOptions maps a preload path to its options.
type relOptions map[string]*fromCache

// preloadCtx is what a preload statement knows of its parent: the parent's
// schema and the parent's own path.
type preloadCtx struct {
	parent *schema.Schema
	prefix string // the parent's path and "."; "" for the top-level statement
	known  bool   // the parent's path is known
}

// ownPathKey is the path of a preload statement, once identified ("" when
// it could not be).
type ownPathKey struct{}

// markPreloading runs before gorm:preload: the preload statements copy the
// parent's settings, and this tells them they are preloads, and of whom.
// Only statements that RelationshipCache applies to are marked; while one
// is, the query callback looks for the mark (Plugin.relPreloads).
func (p *Plugin) markPreloading(db *gorm.DB) {
	if len(db.Statement.Preloads) == 0 {
		return
	}
	if _, ok := db.Statement.Settings.Load(relCacheKey{}); !ok {
		return
	}
	pc := &preloadCtx{parent: db.Statement.Schema, known: true}
	if _, isChild := db.Statement.Settings.Load(preloadingKey{}); isChild {
		own, _ := db.Statement.Settings.Load(ownPathKey{})
		path, _ := own.(string)
		pc.known = path != ""
		pc.prefix = path + "."
	}
	p.relPreloads.Add(1)
	db.Statement.Settings.Store(preloadingKey{}, pc)
}

// unmarkPreloading runs after the preloads, so a reused statement is not
// taken for one.
func (p *Plugin) unmarkPreloading(db *gorm.DB) {
	if len(db.Statement.Preloads) == 0 {
		return
	}
	if _, marked := db.Statement.Settings.LoadAndDelete(preloadingKey{}); marked {
		p.relPreloads.Add(-1)
	}
}

// relationQuery answers a preload statement from per-parent entries.
func (p *Plugin) relationQuery(db *gorm.DB, pc *preloadCtx, rels relOptions) {
	stmt := db.Statement
	in, inAt := findIN(stmt)
	var rel *schema.Relationship
	phase := ""
	if pc.known && pc.parent != nil && stmt.Schema != nil && in != nil {
		rel, phase = matchRelation(pc.parent, stmt.Schema, columnNames(in.Column))
	}
	if rel == nil {
		stmt.Settings.Store(ownPathKey{}, "")
		p.queryHandle(db)
		return
	}
	path := pc.prefix + rel.Name
	if phase == "" {
		stmt.Settings.Store(ownPathKey{}, path)
	}
	fc := rels[path]
	if fc == nil || db.DryRun || !cacheablePreload(stmt, phase) {
		p.queryHandle(db)
		return
	}
	if tx, foreign := txOf(stmt.ConnPool); tx != nil || foreign {
		// Inside a transaction the database answers: it has the
		// transaction's own writes, and its snapshot must not fill the cache.
		p.queryHandle(db)
		return
	}
	r := p.regions[fc.region]
	if r == nil {
		db.AddError(fmt.Errorf("%w %q", ErrUnknownRegion, fc.region))
		return
	}
	l := newRelLoader(db, r, fc, in, inAt, path, phase)
	if l == nil {
		p.queryHandle(db)
		return
	}
	l.memo = p.memo
	// Entries depend on their own parent's rows where every writer of the
	// child table bumps those (see relwrite.go), else on any write to it.
	opts := []region.CallOption{region.WithTags(normTable(stmt.Schema.Table))}
	if preciseColumns(stmt.Schema, columnNames(in.Column)) {
		opts = []region.CallOption{region.WithTags(coarseTag(stmt.Schema.Table)), region.WithKeyTags(l.keyTags)}
	}
	if fc.expirationSet {
		opts = append(opts, region.ExpireAfter(fc.expiration))
	}
	if fc.ignoreExpiry {
		opts = append(opts, region.IgnoreExpiration())
	}
	if err := r.Load(stmt.Context, l.keys, l, opts...); err != nil {
		if errors.Is(err, errUnmatchedChild) {
			p.queryHandle(db)
			return
		}
		db.AddError(err)
		return
	}
	var h *relHandoff
	if v, ok := stmt.Settings.Load(relHandoffKey{}); ok && v.(*relHandoff).dest == stmt.Dest && l.byPK == nil {
		h = v.(*relHandoff)
	}
	p.finish(db, l.assemble(h))
}

// cacheablePreload reports whether per-parent entries can reproduce the
// preload query's answer. A LIMIT or OFFSET applies to all parents at once,
// so it cannot be split per parent. The rows of a many2many's target phase
// are shared between parents in an order the database chose: the entries
// can give them back in primary-key order only, so an ORDER BY on anything
// else goes to the database.
func cacheablePreload(stmt *gorm.Statement, phase string) bool {
	if _, ok := stmt.Clauses["LIMIT"]; ok {
		return false
	}
	if phase != "target" {
		return true
	}
	c, ok := stmt.Clauses["ORDER BY"]
	if !ok {
		return len(stmt.Schema.PrimaryFields) == 1
	}
	ob, ok := c.Expression.(clause.OrderBy)
	if !ok || ob.Expression != nil || len(ob.Columns) != 1 || ob.Columns[0].Desc || len(stmt.Schema.PrimaryFields) != 1 {
		return false
	}
	col := ob.Columns[0].Column
	name := col.Name
	if col.Raw {
		name = strings.TrimSpace(strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), " asc"))
		if i := strings.LastIndexByte(name, '.'); i >= 0 {
			name = name[i+1:]
		}
		name = strings.Trim(name, "\"`")
	}
	return name == stmt.Schema.PrimaryFields[0].DBName
}

// findIN returns the WHERE clause's IN on the current table that a preload
// adds, and its index among the WHERE expressions.
func findIN(stmt *gorm.Statement) (*clause.IN, int) {
	c, ok := stmt.Clauses["WHERE"]
	if !ok {
		return nil, -1
	}
	w, ok := c.Expression.(clause.Where)
	if !ok {
		return nil, -1
	}
	for i, e := range w.Exprs {
		in, ok := e.(clause.IN)
		if !ok {
			continue
		}
		switch col := in.Column.(type) {
		case clause.Column:
			if col.Table == clause.CurrentTable {
				return &in, i
			}
		case []clause.Column:
			if len(col) > 0 && col[0].Table == clause.CurrentTable {
				return &in, i
			}
		}
	}
	return nil, -1
}

func columnNames(c any) []string {
	switch col := c.(type) {
	case clause.Column:
		return []string{col.Name}
	case []clause.Column:
		out := make([]string, len(col))
		for i, x := range col {
			out[i] = x.Name
		}
		return out
	}
	return nil
}

// matchRelation finds the relationship of parent that child's query loads
// by cols, and whether it is a many2many's join-table phase ("join"). Two
// candidates, or none, give nil: the query is then not cached.
func matchRelation(parent, child *schema.Schema, cols []string) (*schema.Relationship, string) {
	var (
		found *schema.Relationship
		phase string
		n     int
	)
	for _, rel := range parent.Relationships.Relations {
		relCols, joinCols, targetCols := loadColumns(rel)
		if rel.JoinTable != nil {
			if child.Table == rel.JoinTable.Table && equalStrings(cols, joinCols) {
				found, phase, n = rel, "join", n+1
			} else if rel.FieldSchema != nil && child.Table == rel.FieldSchema.Table && equalStrings(cols, targetCols) {
				found, phase, n = rel, "target", n+1
			}
			continue
		}
		if rel.FieldSchema == nil || child.Table != rel.FieldSchema.Table {
			continue
		}
		if equalStrings(cols, relCols) {
			found, phase, n = rel, "", n+1
		}
	}
	if n != 1 {
		return nil, ""
	}
	return found, phase
}

// loadColumns returns the columns GORM's preload puts in its IN for rel, in
// reference order (all), and split into those of the relation's own keys
// (own: the join table's, for a many2many) and the others (the target's).
// References fixed to a value (polymorphic types) are conditions, not keys.
func loadColumns(rel *schema.Relationship) (all, own, other []string) {
	for _, ref := range rel.References {
		switch {
		case ref.OwnPrimaryKey:
			all, own = append(all, ref.ForeignKey.DBName), append(own, ref.ForeignKey.DBName)
		case ref.PrimaryValue == "":
			all, other = append(all, ref.PrimaryKey.DBName), append(other, ref.PrimaryKey.DBName)
		}
	}
	return all, own, other
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

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
	memo  *decodedMemo
	dest  reflect.Value
	parts map[string]relPart // caller key → its children
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
		parts: make(map[string]relPart, len(in.Values)),
	}
	if phase == "target" {
		l.byPK = stmt.Schema.PrimaryFields[0]
	}
	// The shape of the query without its parent keys: the relation, the
	// conditions, the columns, the destination.
	sql, vars := l.shape.build(l.withIN(clause.Expr{SQL: "/* dogpile: parent key */"}))
	var base []byte
	base = appendPart(base, 'K', keyVersion+"-rel")
	base = appendPart(base, 'R', fc.region)
	base = appendPart(base, 'D', db.Dialector.Name())
	base = appendPart(base, 'P', path+"#"+phase)
	base = appendPart(base, 'S', sql)
	base = append(base, 'V')
	base = binary.AppendUvarint(base, uint64(len(vars)))
	for _, v := range vars {
		base = appendValue(base, v)
	}
	base = appendPart(base, 'T', fingerprint(l.destType, stmt.Schema))
	// Each parent's key hashes the shape's digest with its key value(s).
	shapeSum := sha256.Sum256(base)
	b := append(base[:0], shapeSum[:]...)
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
		b = b[:len(shapeSum)]
		for _, x := range parts {
			b = appendValue(b, x)
		}
		k := relKey(sha256.Sum256(b))
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

// relKey renders a RelationshipCache entry's digest as its key.
func relKey(sum [sha256.Size]byte) string {
	var k [2 + 43]byte // "r:" and the digest in unpadded base64
	copy(k[:], "r:")
	base64.RawURLEncoding.Encode(k[2:], sum[:])
	return string(k[:])
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
	if err := runScan(ctx, newScanner(ctx, shape.config, shape.pool, shape.schema, shape.stmt, fresh), shape.pool, sql, vars); err != nil {
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
	}
	out := make(map[string]any, len(keys))
	for k, g := range groups {
		ptr := reflect.New(l.destType)
		ptr.Elem().Set(g)
		res := &queryResult{fresh: ptr, rowsAffected: int64(g.Len())}
		res.raw = encodeResult(l.codec, ptr, res.rowsAffected)
		out[k] = res
	}
	return out, nil
}

// relPart is one parent's children: a slice of the loader's own, or the
// memo's, which assemble copies.
type relPart struct {
	n    int           // how many
	own  reflect.Value // the loader's own slice, or
	memo *memoEntry    // what the memo remembers
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
	if e := l.memo.lookup(k, payload, l.destType); e != nil {
		l.parts[k] = relPart{n: e.val.Len(), memo: e}
		return nil
	}
	part := reflect.New(l.destType).Elem()
	rows, err := decodeResult(c, payload, part)
	if err != nil {
		return err
	}
	l.memo.remember(k, payload, part, rows)
	l.parts[k] = relPart{n: part.Len(), own: part}
	return nil
}

// Adopt takes one parent's children as Create made them (see
// queryResult.answerFor for which callers copy them).
func (l *relLoader) Adopt(k string, v any, own bool) bool {
	children, ok := v.(*queryResult).answerFor(own)
	if ok {
		l.parts[k] = relPart{n: children.Len(), own: children}
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
		n += part.n
	}
	out := reflect.MakeSlice(l.destType, n, n)
	// Children that are pointers are copied into one array: those of the
	// memo must be, and a handoff can then give parents windows of it.
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
		dst := out.Slice(at, at+part.n)
		var win reflect.Value
		if arr.IsValid() {
			win = arr.Slice(at, at+part.n)
		}
		switch {
		case part.memo != nil:
			part.memo.fill(dst, win)
		case arr.IsValid():
			for i := range part.n {
				if p := part.own.Index(i); !p.IsNil() {
					win.Index(i).Set(p.Elem())
				}
			}
			pointInto(dst, win)
			for i := range part.n {
				if part.own.Index(i).IsNil() { // never from a scan; kept as it was
					dst.Index(i).SetZero()
				}
			}
		default:
			reflect.Copy(dst, part.own)
		}
		if h != nil {
			h.groups = append(h.groups, relGroup{value: l.values[k], n: part.n})
		}
		at += part.n
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

// stmtShape is what building and scanning a statement's query needs,
// captured so that it can be done off the caller's goroutine.
type stmtShape struct {
	ctx      context.Context
	config   *gorm.Config
	pool     gorm.ConnPool
	stmt     *gorm.Statement // for Joins, which GORM never writes after building
	clauses  map[string]clause.Clause
	build0   []string
	selects  []string
	omits    []string
	distinct bool
	unscoped bool
	table    string
	tableExp *clause.Expr
	schema   *schema.Schema
	model    any
}

func captureShape(stmt *gorm.Statement) stmtShape {
	clauses := make(map[string]clause.Clause, len(stmt.Clauses))
	for k, c := range stmt.Clauses {
		clauses[k] = c
	}
	return stmtShape{
		ctx: stmt.Context, config: stmt.DB.Config, pool: stmt.ConnPool, stmt: stmt, clauses: clauses,
		build0: stmt.BuildClauses, selects: stmt.Selects, omits: stmt.Omits, distinct: stmt.Distinct,
		unscoped: stmt.Unscoped, table: stmt.Table, tableExp: stmt.TableExpr, schema: stmt.Schema, model: stmt.Model,
	}
}

// build returns the SQL and vars of the shape's query with clauses.
func (s stmtShape) build(clauses map[string]clause.Clause) (string, []any) {
	tx := &gorm.DB{Config: s.config}
	tx.Statement = &gorm.Statement{
		DB: tx, ConnPool: s.pool, Context: s.ctx, Clauses: clauses, BuildClauses: s.build0,
		Selects: s.selects, Omits: s.omits, Distinct: s.distinct, Unscoped: s.unscoped,
		Table: s.table, TableExpr: s.tableExp, Schema: s.schema, Model: s.model, Joins: s.stmt.Joins,
	}
	callbacks.BuildQuerySQL(tx)
	return tx.Statement.SQL.String(), tx.Statement.Vars
}

// Row tags. An entry of a preloaded association depends on the rows of its
// own parent: the tag "<table>#<key columns>=<parent key>". A write to a
// child row bumps the tags of its key values before and after the write; a
// write whose rows cannot be known bumps the table's coarse tag, on which
// every such entry also depends.

func coarseTag(table string) string { return normTable(table) + "#rows" }

func rowTag(table string, cols []string, values []any) string {
	return rowTagPrefix(table, cols) + keyString(values...)
}

// rowTagPrefix is what the row tags of table's cols have before the values.
func rowTagPrefix(table string, cols []string) string {
	return normTable(table) + "#" + strings.Join(cols, ",") + "="
}

// keyString renders key values so that the same database value gives the
// same text whatever Go type carried it (uint 3, int64 3 and *int 3 alike).
func keyString(values ...any) string { return string(appendKeyString(nil, values...)) }

// appendKeyString appends keyString(values...) to b.
func appendKeyString(b []byte, values ...any) []byte {
	for i, v := range values {
		if i > 0 {
			b = append(b, 0x1f)
		}
		b = appendKeyValue(b, v)
	}
	return b
}

func appendKeyValue(b []byte, v any) []byte {
	switch x := v.(type) { // the usual key types, without reflection
	case int64:
		return strconv.AppendInt(append(b, 'n'), x, 10)
	case int:
		return strconv.AppendInt(append(b, 'n'), int64(x), 10)
	case uint:
		return strconv.AppendUint(append(b, 'n'), uint64(x), 10)
	case uint64:
		return strconv.AppendUint(append(b, 'n'), x, 10)
	case string:
		return append(append(b, 's'), x...)
	}
	if valuer, ok := v.(driver.Valuer); ok {
		if sent, err := valueOf(valuer); err == nil {
			v = sent
		}
	}
	rv := reflect.ValueOf(v)
	for rv.IsValid() && rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return append(b, "null"...)
		}
		rv = rv.Elem()
	}
	if !rv.IsValid() {
		return append(b, "null"...)
	}
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.AppendInt(append(b, 'n'), rv.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.AppendUint(append(b, 'n'), rv.Uint(), 10)
	case reflect.String:
		return append(append(b, 's'), rv.String()...)
	case reflect.Slice:
		if rv.Type().Elem().Kind() == reflect.Uint8 {
			return append(append(b, 's'), rv.Bytes()...)
		}
	default:
		if t, ok := rv.Interface().(time.Time); ok {
			return t.UTC().AppendFormat(append(b, 't'), time.RFC3339Nano)
		}
	}
	return fmt.Appendf(b, "x%v", rv.Interface())
}
