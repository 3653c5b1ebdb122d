package dogpile

import (
	"context"

	"gorm.io/gorm"
)

// graphState holds the schema's dependency graph (stub).
type graphState struct{}

func (p *Plugin) initGraph(db *gorm.DB) error { return nil }

// writeInvalidation returns what a write of kind to tables invalidates.
func (p *Plugin) writeInvalidation(ctx context.Context, db *gorm.DB, tables []string, kind writeKind) invalidation {
	tags := []string{anyTable}
	for _, t := range tables {
		t = normTable(t)
		tags = append(tags, t, coarseTag(t))
	}
	return invalidation{tags: tags}
}
