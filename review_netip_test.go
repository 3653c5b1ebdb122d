package dogpile_test

import (
	"net"
	"testing"

	"gorm.io/gorm"

	"github.com/dogpile-go/dogpile/internal/dbtest"
)

// reviewHost has a net.IP column: GORM scans the blob's bytes into it.
type reviewHost struct {
	ID uint
	IP net.IP
}

func (reviewHost) TableName() string { return "review_hosts" }

// Review finding: net.IP (a []byte type with MarshalText only) is carried
// by the codec (carry.go returns true for any []byte kind before looking at
// its methods); msgpack writes it as text and ParseIP reads it back in the
// 16-byte form: a 4-byte address from the database comes back from every
// hit as 16 bytes.
func TestReviewNetIPColumn(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		bare, regions := reviewSetup(t, db, nil)
		dbtest.Must(t, db.AutoMigrate(&reviewHost{}))
		dbtest.Must(t, bare.Create(&reviewHost{ID: 1, IP: net.IP{10, 0, 0, 1}}).Error)
		reviewSame(t, db, bare, regions["codec"], "codec", func(tx *gorm.DB) (any, error) {
			var out []reviewHost
			err := tx.Order("id").Find(&out).Error
			return out, err
		})
	})
}
