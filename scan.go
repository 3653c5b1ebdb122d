package dogpile

import (
	"sync"
	"sync/atomic"

	"github.com/dogpile-go/dogpile/internal/sqlscan"
	"gorm.io/gorm"
)

// scanCache remembers what each SQL text reads and writes: queries repeat
// their SQL, and a hit should not tokenize it again. It stops growing at
// maxScans texts (SQL with inlined values would otherwise grow it forever).
type scanCache struct {
	m sync.Map     // string → sqlscan.Statement
	n atomic.Int64 // entries in m
}

const maxScans = 4096

func (p *Plugin) scan(sql string) sqlscan.Statement {
	if st, ok := p.scans.m.Load(sql); ok {
		return st.(sqlscan.Statement)
	}
	st := sqlscan.Scan(sql)
	if p.scans.n.Load() < maxScans {
		if _, loaded := p.scans.m.LoadOrStore(sql, st); !loaded {
			p.scans.n.Add(1)
		}
	}
	return st
}

// markPreloading runs before gorm:preload: the preload statements copy the
// parent's settings, and this tells them they are preloads.
func markPreloading(db *gorm.DB) { db.Statement.Settings.Store(preloadingKey{}, true) }

// unmarkPreloading runs after the preloads, so a reused statement is not
// taken for one.
func unmarkPreloading(db *gorm.DB) { db.Statement.Settings.Delete(preloadingKey{}) }
