package dogpile

import (
	"fmt"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/dogpile-go/dogpile/region"
)

// How each query was served: the plugin records it on the statement, for
// OutcomeOf, GORM's log line and the plugin's observers.

// Outcome says how the plugin served one query.
type Outcome uint8

// The outcomes of a query.
const (
	// NotCached: the query did not ask for the cache (no FromCache, no
	// cache by default), or it did not run through GORM's query chain.
	NotCached Outcome = iota
	// Hit: the answer was read from the cache, fresh.
	Hit
	// StaleHit: an expired or soft-invalidated answer was served from the
	// cache while it is regenerated.
	StaleHit
	// Miss: the answer was not cached; this query ran it and stored it
	// (unless it was not to be stored: region.Stats.NotStoredBy).
	Miss
	// Waited: the answer was not cached; this query waited for another
	// caller running it, and was given its answer.
	Waited
	// Bypassed: the query asked for the cache but went to the database,
	// neither served from the cache nor stored: it locks (FOR UPDATE), it
	// writes, or it runs in a transaction that must see its own view.
	Bypassed
)

var outcomeNames = [...]string{NotCached: "not cached", Hit: "hit", StaleHit: "stale hit", Miss: "miss", Waited: "waited", Bypassed: "bypassed"}

// String returns the outcome's name ("hit", "stale hit", ...).
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "unknown"
}

// Cached reports whether the answer came from the cache: a hit, fresh or
// stale, or the answer of another caller this query waited for.
func (o Outcome) Cached() bool { return o == Hit || o == StaleHit || o == Waited }

// OutcomeOf returns how the plugin served the last query finisher (First,
// Find, Count, ...) run on tx's statement:
//
//	tx := db.Scopes(dogpile.FromCache("default")).First(&u, 42)
//	if dogpile.OutcomeOf(tx) == dogpile.Hit { ... }
//
// It is NotCached for a tx that ran no query through the plugin.
func OutcomeOf(tx *gorm.DB) Outcome {
	if tx == nil || tx.Statement == nil {
		return NotCached
	}
	c, ok := tx.Statement.Clauses[outcomeClause]
	if !ok {
		return NotCached
	}
	o, _ := c.Expression.(outcomeExpr)
	return Outcome(o)
}

// outcomeClause is where the plugin records a statement's outcome: among
// its clauses, which GORM never builds unless named, so it never reaches
// the SQL. A small value in a clause costs the hit path no allocation.
const outcomeClause = "dogpile:outcome"

// outcomeExpr is an Outcome as a clause expression.
type outcomeExpr Outcome

// Build writes nothing: the clause is never part of the SQL.
func (outcomeExpr) Build(clause.Builder) {}

// setOutcome records how the query of db was served, and, for an answer
// from the cache with GORM's logger at Info (db.Debug()), marks the SQL
// GORM's log line prints (gormlog.go).
func setOutcome(db *gorm.DB, o Outcome) {
	db.Statement.Clauses[outcomeClause] = clause.Clause{Expression: outcomeExpr(o)}
	if o.Cached() {
		markLogLine(db, o)
	}
}

// clearOutcome forgets the outcome a statement copied from the one it was
// chained from: each query records its own.
func clearOutcome(db *gorm.DB) {
	delete(db.Statement.Clauses, outcomeClause)
}

// registerOutcomeClear makes the statements of the chains other than the
// query chain (Create, Update, Delete, Raw/Exec, Row/Scan) forget the
// outcome of a query run before on the same statement or on the one it was
// chained from: OutcomeOf reports NotCached for them.
func registerOutcomeClear(db *gorm.DB) error {
	cb := db.Callback()
	for _, s := range []struct {
		name string
		p    interface {
			Register(string, func(*gorm.DB)) error
		}
	}{
		{"create", cb.Create().Before("*")},
		{"update", cb.Update().Before("*")},
		{"delete", cb.Delete().Before("*")},
		{"raw", cb.Raw().Before("*")},
		{"row", cb.Row().Before("*")},
	} {
		if err := s.p.Register("dogpile:clear_outcome", clearOutcome); err != nil {
			return fmt.Errorf("dogpile: register %s callback: %w", s.name, err)
		}
	}
	return nil
}

// outcomeOfRegion maps how a region served a key to the query's outcome.
func outcomeOfRegion(o region.Outcome) Outcome {
	switch o {
	case region.OutcomeHit:
		return Hit
	case region.OutcomeStale:
		return StaleHit
	case region.OutcomeWaited:
		return Waited
	}
	return Miss
}

// Outcome records how the region served the query (region.OutcomeReporter).
func (l *queryLoader) Outcome(_ string, o region.Outcome) { l.outcome = outcomeOfRegion(o) }
