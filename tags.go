package dogpile

import (
	"database/sql/driver"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// The tag vocabulary: every tag the plugin stamps entries with and bumps on
// writes (region tags, see package region). A newcomer reads here what a
// tag means; invalidate.go, relwrite.go and the read side only build them
// through these functions.
//
//   - "<table>": the table's name, lower-cased, without quotes or schema
//     (normTable). Entries depend on every table they read; every write
//     bumps the tables it writes.
//   - "*" (anyTable): entries whose tables could not be known depend on it;
//     every write bumps it.
//   - "key:<name>" (keyTag): entries made FromCache(…, WithKey(name)).
//   - "<table>#rows" (coarseTag) and "<table>#<columns>=<values>" (rowTag):
//     RelationshipCache entries, per parent; see below.

// TableTags returns the tags a write to table whose rows are not known (a
// raw SQL statement, a write reported by the PostgreSQL feed) bumps in a
// region when the schema graph adds nothing to it (no foreign-key action,
// view or declared trigger write reaches another relation): the table's tag
// (the name lower-cased, without quotes or schema), its RelationshipCache
// coarse tag ("<table>#rows"), and "*", the tag of queries whose tables are
// not known.
// Invalidating them in a region (region.InvalidateTags) is what the plugin
// does there for such a write: every cached answer that read the table
// becomes a miss. It is for tools that share a cache with the application
// without its *gorm.DB, such as cmd/dogpile after data was fixed by hand.
func TableTags(table string) []string {
	t := normTable(table)
	return []string{t, coarseTag(t), anyTable}
}

// anyTable is the tag of queries whose tables are not known.
const anyTable = "*"

// keyTag is the tag of entries made WithKey(name).
func keyTag(name string) string { return "key:" + name }

// normTable lower-cases a table name and drops quotes and schema.
func normTable(t string) string {
	t = strings.TrimSpace(t)
	if i := strings.IndexAny(t, " \t"); i >= 0 { // "users u"
		t = t[:i]
	}
	if i := strings.LastIndexByte(t, '.'); i >= 0 {
		t = t[i+1:]
	}
	return strings.ToLower(strings.Trim(t, "\"`[]"))
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
