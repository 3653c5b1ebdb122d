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
func (p *Plugin) invalidateExternal(ctx context.Context, tables ...string) error {
	if len(tables) == 0 {
		return nil
	}
	inv := p.writeInvalidation(ctx, nil, tables, writeAny)
	return p.apply(ctx, []invalidation{inv}, phaseOnly)
}

// invalidateEverything makes every entry of every region of the plugin a
// miss (region.EveryValue): for writes whose tables are not known, such as
// notifications lost while the feed's connection was down.
func (p *Plugin) invalidateEverything(ctx context.Context) error {
	return p.apply(ctx, []invalidation{{all: true}}, phaseOnly)
}
