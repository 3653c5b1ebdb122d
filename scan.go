package dogpile

import (
	"sync"
	"sync/atomic"

	"github.com/dogpile-go/dogpile/internal/sqlscan"
	"github.com/dogpile-go/dogpile/region"
)

// scanCache remembers what each SQL text reads and writes, and for queries
// the region option naming their tables: queries repeat their SQL, and a hit
// should neither tokenize it again nor rebuild its tags. It stops growing at
// maxScans entries (SQL with inlined values would otherwise grow it forever).
type scanCache struct {
	m sync.Map     // scanKey → *scanned (or, for shapes, shapeKey → [32]byte)
	n atomic.Int64 // entries in m
}

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
	if sc, ok := p.scans.m.Load(k); ok {
		return sc.(*scanned)
	}
	sc := &scanned{Statement: sqlscan.Scan(sql)}
	sc.tables = sc.Reads
	if t := normTable(table); t != "" && !contains(sc.tables, t) {
		sc.tables = append(append([]string(nil), sc.tables...), t)
	}
	if len(sc.tables) == 0 {
		sc.tables = []string{anyTable}
	}
	sc.tags = region.WithTags(sc.tables...)
	sc.opts = []region.CallOption{sc.tags}
	if p.scans.n.Load() < maxScans {
		if _, loaded := p.scans.m.LoadOrStore(k, sc); !loaded {
			p.scans.n.Add(1)
		}
	}
	return sc
}
