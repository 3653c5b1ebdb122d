package dogpile

import (
	"crypto/sha256"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/maypok86/otter/v2"

	"github.com/dogpile-go/dogpile/internal/sqlscan"
	"github.com/dogpile-go/dogpile/region"
)

// boundedMap is a concurrent cache for what the plugin computes once per
// SQL text: queries repeat their SQL, and a hit should neither tokenize it
// again nor rebuild its tags or its key's shape. It holds at most maxScans
// entries and evicts the least useful ones (otter's W-TinyLFU), so an
// application that runs ever new SQL texts (values inlined in the SQL, say)
// keeps its hot queries' entries rather than computing every query again.
type boundedMap[K comparable, V any] struct {
	once  sync.Once
	cache *otter.Cache[K, V] // made by the first use; safe for concurrent use
}

func (b *boundedMap[K, V]) c() *otter.Cache[K, V] {
	b.once.Do(func() {
		b.cache = otter.Must(&otter.Options[K, V]{
			MaximumSize: maxScans,
			Executor:    func(fn func()) { fn() }, // drains on the caller's goroutine, as the memory backend does
		})
	})
	return b.cache
}

// load returns the value at k. As the memory backend's lookups do, only
// every readSample-th load on average (at random) is recorded in the
// cache's eviction policy: a sample of the loads of the entries loaded
// often, the ones it keeps, serves it as well as all of them, and costs
// an eighth of the read buffer's slots and drains.
func (b *boundedMap[K, V]) load(k K) (V, bool) {
	c := b.c()
	if rand.Uint32()%readSample == 0 {
		return c.GetIfPresent(k)
	}
	e, ok := c.GetEntryQuietly(k)
	return e.Value, ok
}

// readSample is how many loads, on average, one recorded in the eviction
// policy stands for.
const readSample = 8

// store keeps v for k, evicting another entry when the cache is full.
func (b *boundedMap[K, V]) store(k K, v V) { b.c().Set(k, v) }

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
	graph  uint64              // the schema graph (graphState.gen) tables were expanded with

	lastShape atomic.Pointer[shapeMemo] // the shape this SQL was last run with (keys.go)
}

// maxScans bounds each of the plugin's analysis caches.
const maxScans = 1 << 13

// scan returns what sql, run on table, reads and writes. A query's tables
// include what the views among them read (graph.go), as the schema graph
// had it when the text was scanned; a new graph scans it again.
func (p *Plugin) scan(sql, table string) *scanned {
	k := scanKey{sql, table}
	gen := p.graph.gen.Load()
	if sc, ok := p.scans.load(k); ok && sc.graph == gen {
		return sc
	}
	sc := &scanned{Statement: sqlscan.Scan(sql), graph: gen}
	sc.tables = sc.Reads
	if t := normTable(table); t != "" && !slices.Contains(sc.tables, t) {
		sc.tables = append(append([]string(nil), sc.tables...), t)
	}
	if len(sc.tables) == 0 {
		sc.tables = []string{anyTable}
	} else if g := p.graph.cur.Load(); g != nil {
		sc.tables = g.readTables(sc.tables)
	}
	sc.tags = region.WithTags(sc.tables...)
	sc.opts = []region.CallOption{sc.tags}
	p.scans.store(k, sc)
	return sc
}
