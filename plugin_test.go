package dogpile_test

import (
	"errors"
	"testing"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/region"
)

// A Plugin keeps what Initialize saves of its *gorm.DB (GORM's own query
// and preload handlers): a second database would overwrite them under the
// first one's callbacks, so it is refused with a clear error.
func TestPluginRejectsASecondDB(t *testing.T) {
	p := dogpile.New(map[string]*region.Region{"default": region.New(memory.New())})
	first, second := dbtest.SQLite(t), dbtest.SQLite(t)
	if err := first.Use(p); err != nil {
		t.Fatalf("first Use: %v", err)
	}
	err := second.Use(p)
	if !errors.Is(err, dogpile.ErrAlreadyInitialized) {
		t.Fatalf("second Use: %v; want ErrAlreadyInitialized", err)
	}
	// The first database still works through the plugin.
	var n int64
	if err := first.Scopes(dogpile.FromCache("default")).Raw("SELECT 1").Scan(&n).Error; err != nil || n != 1 {
		t.Fatalf("query on the first database: %d, %v", n, err)
	}
}
