package dogpile

import "context"

// Writes the plugin does not see in a GORM statement: the PostgreSQL
// invalidation feed (feed.go) and SQLite's data_version (dataversion.go)
// report them here, after the database committed them.

// invalidateExternal invalidates, in every region, what a committed write
// to tables changed: the tables themselves and what the schema graph says
// the database changes with them (foreign-key actions, views, declared
// trigger writes; graph.go). It runs after the commit, so one phase is
// enough: an entry filled from data read before the write was committed
// carries the counters read before its creator ran, and dies with the bump.
//
// regionName limits it to the region registered under that name ("": every
// region), for callers that invalidate shared regions once across processes
// but each process's own memory regions itself.
func (p *Plugin) invalidateExternal(ctx context.Context, regionName string, tables ...string) error {
	if len(tables) == 0 {
		return nil
	}
	inv := p.writeInvalidation(ctx, nil, tables, writeAny)
	inv.region = regionName
	return p.apply(ctx, []invalidation{inv}, phaseOnly)
}

// invalidateEverything makes every entry of every region of the plugin a
// miss (region.EveryValue): for writes whose tables are not known, such as
// notifications lost while the feed's connection was down.
// regionName limits it as for invalidateExternal.
//
// Whatever was missed may have been DDL too: the schema graph is read again
// before the next write that needs it.
func (p *Plugin) invalidateEverything(ctx context.Context, regionName string) error {
	p.graphStale()
	return p.apply(ctx, []invalidation{{region: regionName, all: true}}, phaseOnly)
}
