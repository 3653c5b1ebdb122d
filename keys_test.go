package dogpile_test

import (
	"testing"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/internal/dbtest"
)

// TestKeysPointerBindValue: a bind value passed by pointer is keyed by what
// it points at, so reusing one variable for several queries gives each its
// own answer.
func TestKeysPointerBindValue(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		shSeedRows(t, db.DB)
		cached, _ := shOpen(t, db, db.Pool)
		id := new(uint)
		for round := range 2 { // a miss, then a hit, for each value
			for _, want := range []uint{1, 2, 3} {
				*id = want
				var got []ShRow
				dbtest.Must(t, cached.Scopes(dogpile.FromCache("default")).Where("id = ?", id).Find(&got).Error)
				if len(got) != 1 || got[0].ID != want {
					t.Errorf("round %d: WHERE id = ? with *id = %d: %d rows, first id %v", round, want, len(got), firstID(got))
				}
			}
		}
	})
}

func firstID(rows []ShRow) any {
	if len(rows) == 0 {
		return nil
	}
	return rows[0].ID
}
