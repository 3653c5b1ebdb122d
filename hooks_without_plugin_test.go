package dogpile_test

// The README recommends calling InvalidateTables from model hooks. On a
// *gorm.DB without the plugin (seed scripts, migrations, admin tools) the
// hook must not fail the write: nothing is cached through that database.
// The plugin says so once, through GORM's logger.

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/internal/dbtest"
)

type npItem struct {
	ID   uint
	Name string
}

func (i *npItem) AfterCreate(tx *gorm.DB) error {
	if err := dogpile.InvalidateTables(tx, "np_summaries"); err != nil {
		return err
	}
	return dogpile.InvalidateKey(tx, "default", "np-items")
}

// npLogger counts what GORM's logger interface is asked to say.
type npLogger struct {
	mu    sync.Mutex
	warns []string
}

func (l *npLogger) LogMode(logger.LogLevel) logger.Interface { return l }
func (l *npLogger) Info(context.Context, string, ...any)     {}
func (l *npLogger) Error(context.Context, string, ...any)    {}
func (l *npLogger) Trace(context.Context, time.Time, func() (string, int64), error) {
}
func (l *npLogger) Warn(_ context.Context, msg string, _ ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.warns = append(l.warns, msg)
}

func (l *npLogger) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.warns)
}

func TestHooksWithoutPlugin(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		log := &npLogger{}
		db.Config.Logger = log
		dbtest.Must(t, db.AutoMigrate(&npItem{}))

		items := []npItem{{Name: "a"}, {Name: "b"}, {Name: "c"}, {Name: "d"}, {Name: "e"}}
		if err := db.CreateInBatches(&items, 2).Error; err != nil {
			t.Fatalf("CreateInBatches on a database without the plugin: %v", err)
		}
		var n int64
		dbtest.Must(t, db.Model(&npItem{}).Count(&n).Error)
		if n != 5 {
			t.Fatalf("created %d rows; want 5", n)
		}
		dbtest.Must(t, db.Create(&npItem{Name: "f"}).Error)
		dbtest.Must(t, db.Transaction(func(tx *gorm.DB) error { return tx.Create(&npItem{Name: "g"}).Error }))
		dbtest.Must(t, dogpile.InvalidateTables(db.DB, "np_items"))
		if got := log.count(); got != 1 {
			t.Errorf("the logger got %d warnings (%q); want exactly 1 for the database", got, log.warns)
		}

		// Another database says so once too.
		other := dbtest.SQLite(t)
		otherLog := &npLogger{}
		other.Config.Logger = otherLog
		dbtest.Must(t, dogpile.InvalidateKey(other.DB, "default", "x"))
		dbtest.Must(t, dogpile.InvalidateKey(other.DB, "default", "x"))
		if got := otherLog.count(); got != 1 {
			t.Errorf("a second database's logger got %d warnings; want 1", got)
		}
		if got := log.count(); got != 1 {
			t.Errorf("the first database's logger got %d warnings after the second's; want still 1", got)
		}
	})
}

func TestInvalidateNilDB(t *testing.T) {
	if err := dogpile.InvalidateTables(nil, "t"); !errors.Is(err, dogpile.ErrNotRegistered) {
		t.Errorf("InvalidateTables(nil) = %v; want ErrNotRegistered", err)
	}
	if err := dogpile.InvalidateKey(nil, "default", "k"); !errors.Is(err, dogpile.ErrNotRegistered) {
		t.Errorf("InvalidateKey(nil) = %v; want ErrNotRegistered", err)
	}
	if err := dogpile.InvalidateTables(&gorm.DB{}, "t"); !errors.Is(err, dogpile.ErrNotRegistered) {
		t.Errorf("InvalidateTables(&gorm.DB{}) = %v; want ErrNotRegistered", err)
	}
}
