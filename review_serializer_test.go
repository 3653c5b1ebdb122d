package dogpile_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"

	"github.com/dogpile-go/dogpile/internal/dbtest"
)

// reviewSealed is a field type GORM serializes through its own methods
// (schema.SerializerInterface): its state is unexported.
type reviewSealed struct{ plain string }

func (s *reviewSealed) Scan(_ context.Context, _ *schema.Field, _ reflect.Value, v any) error {
	switch x := v.(type) {
	case string:
		s.plain = x
	case []byte:
		s.plain = string(x)
	case nil:
		s.plain = ""
	default:
		return fmt.Errorf("sealed: %T", v)
	}
	return nil
}

func (s reviewSealed) Value(context.Context, *schema.Field, reflect.Value, any) (any, error) {
	return s.plain, nil
}

type reviewVault struct {
	ID     uint
	Sealed reviewSealed
}

func (reviewVault) TableName() string { return "review_vaults" }

// Review finding: a field whose type implements schema.SerializerInterface
// is filled by GORM through that interface, as a serializer tag would, but
// carriedModel looks only for sql.Scanner and the serializer: tag: it takes
// the struct for a model, skips its unexported fields as "never filled by a
// scan", and trusts it to the codec, which writes nothing of it. Every hit
// gives reviewSealed{}.
func TestReviewSerializerInterfaceField(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		bare, regions := reviewSetup(t, db, nil)
		dbtest.Must(t, db.Exec("CREATE TABLE review_vaults (id integer PRIMARY KEY, sealed text)").Error)
		dbtest.Must(t, db.Exec("INSERT INTO review_vaults (id, sealed) VALUES (1, 'hush')").Error)
		reviewSame(t, db, bare, regions["codec"], "codec", func(tx *gorm.DB) (any, error) {
			var out []reviewVault
			err := tx.Order("id").Find(&out).Error
			return out, err
		})
	})
}
