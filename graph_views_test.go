package dogpile_test

// Views in the schema graph: a cached read of a view depends on the tables
// the view reads, through views over views; a PostgreSQL materialized view
// changes only when it is refreshed. See graph_test.go for the harness.

import (
	"fmt"
	"strings"
	"testing"

	"gorm.io/gorm"

	"github.com/dogpile-go/dogpile/internal/dbtest"
)

type grSale struct {
	ID         uint
	Amount     int
	CustomerID *uint
}

func (grSale) TableName() string { return "gr_sales" }

type grCustomer struct {
	ID   uint
	Name string
}

func (grCustomer) TableName() string { return "gr_customers" }

// grBigSale is a model whose table is a view.
type grBigSale struct {
	ID     uint
	Amount int
}

func (grBigSale) TableName() string { return "gr_big_sales" }

// graphViewSchema: gr_sale_totals over gr_sales, gr_sale_report over
// gr_sale_totals (nested), gr_big_sales over gr_sales (read through a
// model), gr_customer_sales over gr_sales and gr_customers, and
// gr_unrelated.
var graphViewSchema = []string{
	`CREATE TABLE gr_customers (id {pk}, name TEXT NOT NULL)`,
	`CREATE TABLE gr_sales (id {pk}, amount INTEGER NOT NULL, customer_id INTEGER REFERENCES gr_customers (id))`,
	`CREATE VIEW gr_sale_totals AS SELECT SUM(amount) AS total FROM gr_sales`,
	`CREATE VIEW gr_sale_report AS SELECT total * 2 AS doubled FROM gr_sale_totals`,
	`CREATE VIEW gr_big_sales AS SELECT id, amount FROM gr_sales WHERE amount >= 10`,
	`CREATE VIEW gr_customer_sales AS SELECT s.id AS sale_id, c.name AS name, s.amount AS amount
		FROM gr_sales s JOIN gr_customers c ON c.id = s.customer_id`,
	graphUnrelatedSchema,
}

// graphScalar reads numbers with Raw(q).Find into a slice. (Raw(q).Scan
// goes through GORM's row chain, which the plugin never caches: README,
// "Bypasses".)
func graphScalar(name, q string) graphProbe {
	return graphProbe{name: name, run: func(t *testing.T, tx *gorm.DB) string {
		var ns []int64
		dbtest.Must(t, tx.Raw(q).Find(&ns).Error)
		return fmt.Sprint(ns)
	}}
}

var (
	graphTotalsProbe = graphScalar("Raw gr_sale_totals", "SELECT total FROM gr_sale_totals")
	graphReportProbe = graphScalar("Raw gr_sale_report (view over a view)", "SELECT doubled FROM gr_sale_report")
	graphBigProbe    = graphProbe{name: "model Find of view gr_big_sales", run: func(t *testing.T, tx *gorm.DB) string {
		var bs []grBigSale
		dbtest.Must(t, tx.Order("id").Find(&bs).Error)
		var sb strings.Builder
		for _, b := range bs {
			fmt.Fprintf(&sb, "%d:%d;", b.ID, b.Amount)
		}
		return sb.String()
	}}
	graphCustomerSalesProbe = graphProbe{name: "Raw gr_customer_sales (view over two tables)", run: func(t *testing.T, tx *gorm.DB) string {
		var rows []struct {
			SaleID uint
			Name   string
			Amount int
		}
		dbtest.Must(t, tx.Raw("SELECT sale_id, name, amount FROM gr_customer_sales ORDER BY sale_id").Find(&rows).Error)
		var sb strings.Builder
		for _, r := range rows {
			fmt.Fprintf(&sb, "%d:%s:%d;", r.SaleID, r.Name, r.Amount)
		}
		return sb.String()
	}}
)

// TestGraphViews: each write to gr_sales, through GORM Create, Update and
// Delete and through Exec of INSERT, UPDATE and DELETE, outside and inside a
// transaction, invalidates the views over it: gr_sale_totals (Raw),
// gr_sale_report (a view over that view), gr_big_sales (read through a
// model whose TableName is the view) and gr_customer_sales (a join of two
// tables); gr_unrelated stays a hit. A write to gr_customers invalidates
// gr_customer_sales only. Fails without the graph: a write to gr_sales
// bumps the tag gr_sales, on which no view read depends.
func TestGraphViews(t *testing.T) {
	graphEach(t, func(t *testing.T, db *dbtest.DB) {
		e := graphSetup(t, db, graphViewSchema)
		cust := grCustomer{Name: "acme"}
		dbtest.Must(t, db.Create(&cust).Error)
		for _, a := range []int{5, 12, 30} {
			dbtest.Must(t, db.Create(&grSale{Amount: a, CustomerID: &cust.ID}).Error)
		}
		dbtest.Must(t, db.Create(&grUnrelated{V: 1}).Error)
		saleViews := []graphProbe{graphTotalsProbe, graphReportProbe, graphBigProbe, graphCustomerSalesProbe}
		all := append(saleViews[:len(saleViews):len(saleViews)], graphUnrelatedProbe)

		// newSale makes, through the plugin, a sale every view shows.
		newSale := func(t *testing.T) grSale {
			s := grSale{Amount: 40, CustomerID: &cust.ID}
			dbtest.Must(t, db.Create(&s).Error)
			return s
		}
		cases := []struct {
			name  string
			write func(t *testing.T, tx *gorm.DB, s grSale)
			tx    bool
		}{
			{"Create", func(t *testing.T, tx *gorm.DB, _ grSale) {
				dbtest.Must(t, tx.Create(&grSale{Amount: 11, CustomerID: &cust.ID}).Error)
			}, false},
			{"Update", func(t *testing.T, tx *gorm.DB, s grSale) { dbtest.Must(t, tx.Model(&s).Update("Amount", 41).Error) }, false},
			{"Delete", func(t *testing.T, tx *gorm.DB, s grSale) { dbtest.Must(t, tx.Delete(&s).Error) }, false},
			{"ExecInsert", func(t *testing.T, tx *gorm.DB, _ grSale) {
				dbtest.Must(t, tx.Exec("INSERT INTO gr_sales (amount, customer_id) VALUES (?, ?)", 13, cust.ID).Error)
			}, false},
			{"ExecUpdate", func(t *testing.T, tx *gorm.DB, s grSale) {
				dbtest.Must(t, tx.Exec("UPDATE gr_sales SET amount = amount + 1 WHERE id = ?", s.ID).Error)
			}, false},
			{"ExecDelete", func(t *testing.T, tx *gorm.DB, s grSale) {
				dbtest.Must(t, tx.Exec("DELETE FROM gr_sales WHERE id = ?", s.ID).Error)
			}, false},
			{"CreateInTransaction", func(t *testing.T, tx *gorm.DB, _ grSale) {
				dbtest.Must(t, tx.Create(&grSale{Amount: 14, CustomerID: &cust.ID}).Error)
			}, true},
			{"UpdateInTransaction", func(t *testing.T, tx *gorm.DB, s grSale) {
				dbtest.Must(t, tx.Model(&s).Update("Amount", 42).Error)
			}, true},
			{"ExecDeleteInTransaction", func(t *testing.T, tx *gorm.DB, s grSale) {
				dbtest.Must(t, tx.Exec("DELETE FROM gr_sales WHERE id = ?", s.ID).Error)
			}, true},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				s := newSale(t)
				before := e.warm(t, all...)
				if c.tx {
					dbtest.Must(t, db.Transaction(func(tx *gorm.DB) error {
						c.write(t, tx, s)
						return nil
					}))
				} else {
					c.write(t, db.DB, s)
				}
				for _, p := range saleViews {
					e.fresh(t, p, before[p.name])
				}
				e.hit(t, graphUnrelatedProbe, before[graphUnrelatedProbe.name])
			})
		}
		t.Run("OtherBaseTable", func(t *testing.T) {
			before := e.warm(t, all...)
			dbtest.Must(t, db.Model(&cust).Update("Name", "acme2").Error)
			e.fresh(t, graphCustomerSalesProbe, before[graphCustomerSalesProbe.name])
			for _, p := range []graphProbe{graphTotalsProbe, graphReportProbe, graphBigProbe, graphUnrelatedProbe} {
				e.hit(t, p, before[p.name]) // precision: these views do not read gr_customers
			}
		})
	})
}

// TestGraphMaterializedView (PostgreSQL): a materialized view changes when
// it is refreshed, not when its base table is written. A cached read of it
// stays equal to the database after a write to gr_sales, and after REFRESH
// MATERIALIZED VIEW (plain, CONCURRENTLY with its unique index, and inside a
// transaction) reads the new contents, as does a view over it.
func TestGraphMaterializedView(t *testing.T) {
	db := dbtest.Postgres(t)
	e := graphSetup(t, db, []string{
		`CREATE TABLE gr_sales (id {pk}, amount INTEGER NOT NULL, customer_id INTEGER)`,
		`CREATE MATERIALIZED VIEW gr_mv_totals AS SELECT 1 AS k, SUM(amount) AS total FROM gr_sales`,
		`CREATE UNIQUE INDEX gr_mv_totals_k ON gr_mv_totals (k)`,
		`CREATE VIEW gr_mv_report AS SELECT total * 2 AS doubled FROM gr_mv_totals`,
		graphUnrelatedSchema,
	})
	dbtest.Must(t, db.Create(&grSale{Amount: 5}).Error)
	dbtest.Must(t, db.Create(&grUnrelated{V: 1}).Error)
	e.exec(t, "REFRESH MATERIALIZED VIEW gr_mv_totals")
	mv := graphScalar("Raw gr_mv_totals", "SELECT total FROM gr_mv_totals")
	report := graphScalar("Raw gr_mv_report (view over the materialized view)", "SELECT doubled FROM gr_mv_report")
	probes := []graphProbe{mv, report}

	refreshes := []struct {
		name    string
		refresh func(t *testing.T)
	}{
		{"Refresh", func(t *testing.T) { e.exec(t, "REFRESH MATERIALIZED VIEW gr_mv_totals") }},
		{"RefreshConcurrently", func(t *testing.T) { e.exec(t, "REFRESH MATERIALIZED VIEW CONCURRENTLY gr_mv_totals") }},
		{"RefreshInTransaction", func(t *testing.T) {
			dbtest.Must(t, db.Transaction(func(tx *gorm.DB) error {
				return tx.Exec("REFRESH MATERIALIZED VIEW gr_mv_totals").Error
			}))
		}},
	}
	for i, r := range refreshes {
		t.Run(r.name, func(t *testing.T) {
			before := e.warm(t, append(probes, graphUnrelatedProbe)...)
			dbtest.Must(t, db.Create(&grSale{Amount: 10 + i}).Error)
			// The materialized view did not change; whether the plugin
			// invalidated it (a needless miss) or not, the cached answer
			// equals the database's.
			for _, p := range probes {
				if e.truth(t, p) != before[p.name] {
					t.Fatalf("test bug: %s changed without a refresh", p.name)
				}
				if !e.equal(t, p) {
					t.Logf("%s: a miss after a write to its base table (not refreshed): correct, not precise", p.name)
				}
			}
			e.hit(t, graphUnrelatedProbe, before[graphUnrelatedProbe.name])
			before = e.warm(t, probes...)
			r.refresh(t)
			for _, p := range probes {
				e.fresh(t, p, before[p.name])
			}
		})
	}
}
