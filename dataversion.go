package dogpile

import (
	"context"

	"gorm.io/gorm"
)

// dataVersionWatch checks SQLite's data_version (stub).
type dataVersionWatch struct{}

func (p *Plugin) initDataVersion(db *gorm.DB) error { return nil }

// checkDataVersion runs on the read path (stub).
func (p *Plugin) checkDataVersion(ctx context.Context) {}
