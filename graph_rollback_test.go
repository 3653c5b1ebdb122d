package dogpile_test

// Writes that roll back invalidate nothing the graph adds: not the tables a
// foreign-key action would have changed, not the views over the written
// table, not a declared trigger's tables, and not everything for a table
// with an undeclared trigger. See graph_test.go for the harness.

import (
	"errors"
	"testing"

	"gorm.io/gorm"

	"github.com/dogpile-go/dogpile/internal/dbtest"
)

// TestGraphRollbackInvalidatesNothing: inside a transaction, an update of a
// member's key (ON UPDATE CASCADE to profiles and badges), a sale (views),
// an order (declared trigger writes) and a ticket (undeclared trigger: all
// tables) are written, then the transaction rolls back (db.Transaction
// returning an error; Begin … Rollback; a savepoint rolled back under a
// transaction that commits another write). Every cached read stays a hit
// with the same answer, except the table the committed write changed.
// Passes on the stub (it invalidates no graph tables at all); it fails an
// implementation that applies graph invalidations at write time instead
// of queuing them on the transaction.
func TestGraphRollbackInvalidatesNothing(t *testing.T) {
	graphEach(t, func(t *testing.T, db *dbtest.DB) {
		schema := graphFKSchema("CASCADE")
		schema = schema[:len(schema)-1] // graphUnrelatedSchema comes with the triggers
		for _, s := range graphViewSchema {
			if s != graphUnrelatedSchema {
				schema = append(schema, s)
			}
		}
		schema = append(schema, graphTriggerSchema(db.Dialect)...)
		e := graphSetup(t, db, schema, graphTriggerOpts()...)
		m, p, b := graphFKSeed(t, e)
		graphTriggerSeed(t, db)
		dbtest.Must(t, db.Create(&grSale{Amount: 5}).Error)
		probes := []graphProbe{
			graphMemberProbe(m.ID), graphProfileProbe(p.ID), graphBadgeProbe(b.ID),
			graphTotalsProbe, graphReportProbe, graphBigProbe,
			graphOrdersProbe, graphOrderTotalsProbe, graphAuditProbe,
			graphTicketsProbe, graphTicketLogProbe, graphFeedProbe,
		}
		writes := func(tx *gorm.DB) error {
			return errors.Join(
				tx.Model(&m).Update("Refer", 100).Error,
				tx.Create(&grSale{Amount: 50}).Error,
				tx.Exec("INSERT INTO gr_orders (amount) VALUES (?)", 9).Error,
				tx.Create(&grTicket{Title: "rolled back"}).Error,
			)
		}
		errRollback := errors.New("roll back")
		checkAllHits := func(t *testing.T, before map[string]string, except string) {
			t.Helper()
			for _, p := range append(probes, graphUnrelatedProbe) {
				if p.name == except {
					e.fresh(t, p, before[p.name])
					continue
				}
				e.hit(t, p, before[p.name])
			}
		}

		t.Run("TransactionFuncError", func(t *testing.T) {
			before := e.warm(t, append(probes, graphUnrelatedProbe)...)
			err := db.Transaction(func(tx *gorm.DB) error {
				if err := writes(tx); err != nil {
					return err
				}
				return errRollback
			})
			if !errors.Is(err, errRollback) {
				t.Fatalf("transaction: %v; want the rollback error", err)
			}
			checkAllHits(t, before, "")
		})
		t.Run("BeginRollback", func(t *testing.T) {
			before := e.warm(t, append(probes, graphUnrelatedProbe)...)
			tx := db.Begin()
			dbtest.Must(t, tx.Error)
			dbtest.Must(t, writes(tx))
			dbtest.Must(t, tx.Rollback().Error)
			checkAllHits(t, before, "")
		})
		t.Run("SavepointRolledBack", func(t *testing.T) {
			before := e.warm(t, append(probes, graphUnrelatedProbe)...)
			dbtest.Must(t, db.Transaction(func(tx *gorm.DB) error {
				if err := tx.Exec("UPDATE gr_unrelated SET v = v + 1").Error; err != nil {
					return err
				}
				inner := tx.Transaction(func(tx2 *gorm.DB) error {
					if err := writes(tx2); err != nil {
						return err
					}
					return errRollback
				})
				if !errors.Is(inner, errRollback) {
					return inner
				}
				return nil
			}))
			checkAllHits(t, before, graphUnrelatedProbe.name)
		})
	})
}
