package dogpile

import (
	"crypto/sha256"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/dogpile-go/dogpile/internal/sqlscan"
	"github.com/dogpile-go/dogpile/region"
)

// boundedMap is a concurrent map for what the plugin computes once per SQL
// text: queries repeat their SQL, and a hit should neither tokenize it again
// nor rebuild its tags or its key's shape. It stops growing at maxScans
// entries (SQL with inlined values would otherwise grow it forever); past
// that, what is not in it is computed on every call.
type boundedMap[K comparable, V any] struct {
	m sync.Map     // K → V
	n atomic.Int64 // entries in m
}

func (b *boundedMap[K, V]) load(k K) (V, bool) {
	v, ok := b.m.Load(k)
	if !ok {
		var zero V
		return zero, false
	}
	return v.(V), true
}

// store keeps v for k unless the map is full or already has k.
func (b *boundedMap[K, V]) store(k K, v V) {
	if b.n.Load() < maxScans {
		if _, loaded := b.m.LoadOrStore(k, v); !loaded {
			b.n.Add(1)
		}
	}
}

// scanCache remembers what each SQL text reads and writes, and for queries
// the region option naming their tables.
type scanCache = boundedMap[scanKey, *scanned]

// shapeCache remembers the hash of each query shape (keys.go).
type shapeCache = boundedMap[shapeKey, [sha256.Size]byte]

type scanKey struct{ sql, table string }

type scanned struct {
	sqlscan.Statement
	tables []string            // what a query on it depends on: its reads and table, or anyTable
	tags   region.CallOption   // region.WithTags(tables...)
	opts   []region.CallOption // just tags, for queries with no other option

	lastShape atomic.Pointer[shapeMemo] // the shape this SQL was last run with (keys.go)
}

const maxScans = 4096

// scan returns what sql, run on table, reads and writes.
func (p *Plugin) scan(sql, table string) *scanned {
	k := scanKey{sql, table}
	if sc, ok := p.scans.load(k); ok {
		return sc
	}
	sc := &scanned{Statement: sqlscan.Scan(sql)}
	sc.tables = sc.Reads
	if t := normTable(table); t != "" && !slices.Contains(sc.tables, t) {
		sc.tables = append(append([]string(nil), sc.tables...), t)
	}
	if len(sc.tables) == 0 {
		sc.tables = []string{anyTable}
	}
	sc.tags = region.WithTags(sc.tables...)
	sc.opts = []region.CallOption{sc.tags}
	p.scans.store(k, sc)
	return sc
}
