package dogpile_test

// Edge cases of the schema graph: more write paths (Save, upserts, SQLite's
// REPLACE, raw transactions, RETURNING), TRUNCATE … CASCADE, cycles of
// foreign keys, quoted mixed-case names, FK actions and trigger writes
// reaching views, RelationshipCache over a view, view shapes (CTEs,
// subqueries, quoting), writes through views, partitions and inheritance,
// rules, renames, DDL in transactions, several regions; and two views the
// catalog does not describe fully (a view calling a function, a view
// shadowed by a table of the same name in another schema). See graph_test.go
// for the harness.

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/internal/dbtest"
)

// graphRows is a cached Raw(q).Find into []map[string]any, rendered with
// sorted columns.
func graphRows(name, q string) graphProbe {
	return graphProbe{name: name, run: func(t *testing.T, tx *gorm.DB) string {
		var rows []map[string]any
		dbtest.Must(t, tx.Raw(q).Find(&rows).Error)
		var sb strings.Builder
		for _, r := range rows {
			keys := make([]string, 0, len(r))
			for k := range r {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				v := r[k]
				if b, ok := v.([]byte); ok {
					v = string(b)
				}
				fmt.Fprintf(&sb, "%s=%v,", k, v)
			}
			sb.WriteString(";")
		}
		return sb.String()
	}}
}

// TestGraphFKWritePaths: more ways to change or remove a referenced key,
// each on a fresh members/profiles/badges schema with ON UPDATE CASCADE ON
// DELETE CASCADE: Save, Updates (map and struct), UpdateColumn, an Update
// over a WHERE clause, Delete by condition and by a list of keys, an upsert
// that updates the key, Raw UPDATE … RETURNING, a raw transaction on a
// pinned connection, a savepoint that commits, and on SQLite INSERT OR
// REPLACE (GORM's clause.Insert modifier and Exec) and REPLACE INTO, which
// delete the conflicting row and so run ON DELETE actions.
func TestGraphFKWritePaths(t *testing.T) {
	type path struct {
		name       string
		sqliteOnly bool
		write      func(t *testing.T, db *gorm.DB, m grMember)
	}
	paths := []path{
		{name: "Save", write: func(t *testing.T, db *gorm.DB, m grMember) {
			m.Refer = 100
			dbtest.Must(t, db.Save(&m).Error)
		}},
		{name: "UpdatesMap", write: func(t *testing.T, db *gorm.DB, m grMember) {
			dbtest.Must(t, db.Model(&m).Updates(map[string]any{"refer": 100}).Error)
		}},
		{name: "UpdatesStruct", write: func(t *testing.T, db *gorm.DB, m grMember) {
			dbtest.Must(t, db.Model(&m).Updates(grMember{Refer: 100}).Error)
		}},
		{name: "UpdateColumn", write: func(t *testing.T, db *gorm.DB, m grMember) {
			dbtest.Must(t, db.Model(&m).UpdateColumn("refer", 100).Error)
		}},
		{name: "UpdateWhere", write: func(t *testing.T, db *gorm.DB, m grMember) {
			dbtest.Must(t, db.Model(&grMember{}).Where("refer = ?", 1).Update("refer", 100).Error)
		}},
		{name: "DeleteWhere", write: func(t *testing.T, db *gorm.DB, m grMember) {
			dbtest.Must(t, db.Where("refer = ?", 1).Delete(&grMember{}).Error)
		}},
		{name: "DeleteKeys", write: func(t *testing.T, db *gorm.DB, m grMember) {
			dbtest.Must(t, db.Delete(&grMember{}, []uint{m.ID}).Error)
		}},
		{name: "UpsertUpdatesKey", write: func(t *testing.T, db *gorm.DB, m grMember) {
			dbtest.Must(t, db.Clauses(clause.OnConflict{
				Columns:   []clause.Column{{Name: "id"}},
				DoUpdates: clause.AssignmentColumns([]string{"refer"}),
			}).Create(&grMember{ID: m.ID, Refer: 100, Name: m.Name}).Error)
		}},
		{name: "RawUpdateReturning", write: func(t *testing.T, db *gorm.DB, m grMember) {
			var ids []uint
			dbtest.Must(t, db.Raw("UPDATE gr_members SET refer = ? WHERE id = ? RETURNING id", 100, m.ID).Find(&ids).Error)
		}},
		{name: "RawTransactionOnPinnedConnection", write: func(t *testing.T, db *gorm.DB, m grMember) {
			dbtest.Must(t, db.Connection(func(tx *gorm.DB) error {
				if err := tx.Exec("BEGIN").Error; err != nil {
					return err
				}
				if err := tx.Exec("UPDATE gr_members SET refer = ? WHERE id = ?", 100, m.ID).Error; err != nil {
					return err
				}
				return tx.Exec("COMMIT").Error
			}))
		}},
		{name: "SavepointCommitted", write: func(t *testing.T, db *gorm.DB, m grMember) {
			dbtest.Must(t, db.Transaction(func(tx *gorm.DB) error {
				return tx.Transaction(func(tx2 *gorm.DB) error { return tx2.Model(&m).Update("Refer", 100).Error })
			}))
		}},
		{name: "InsertOrReplaceClause", sqliteOnly: true, write: func(t *testing.T, db *gorm.DB, m grMember) {
			dbtest.Must(t, db.Clauses(clause.Insert{Modifier: "OR REPLACE"}).Create(&grMember{Refer: 1, Name: "replacement"}).Error)
		}},
		{name: "ExecInsertOrReplace", sqliteOnly: true, write: func(t *testing.T, db *gorm.DB, m grMember) {
			dbtest.Must(t, db.Exec("INSERT OR REPLACE INTO gr_members (refer, name) VALUES (?, ?)", 1, "replacement").Error)
		}},
		{name: "ExecReplaceInto", sqliteOnly: true, write: func(t *testing.T, db *gorm.DB, m grMember) {
			dbtest.Must(t, db.Exec("REPLACE INTO gr_members (refer, name) VALUES (?, ?)", 1, "replacement").Error)
		}},
	}
	for _, d := range graphDialects {
		t.Run(d.name, func(t *testing.T) {
			for _, w := range paths {
				if w.sqliteOnly && d.name != "sqlite" {
					continue
				}
				t.Run(w.name, func(t *testing.T) {
					db := d.open(t)
					e := graphSetup(t, db, graphFKSchema("CASCADE"))
					m, p, b := graphFKSeed(t, e)
					profile, badge := graphProfileProbe(p.ID), graphBadgeProbe(b.ID)
					before := e.warm(t, profile, badge, graphUnrelatedProbe)
					w.write(t, db.DB, m)
					e.fresh(t, profile, before[profile.name])
					e.fresh(t, badge, before[badge.name])
					e.hit(t, graphUnrelatedProbe, before[graphUnrelatedProbe.name])
				})
			}
		})
	}
}

// TestGraphTruncateCascade (PostgreSQL): TRUNCATE … CASCADE empties every
// table that references the truncated one, whatever the foreign keys'
// actions (here NO ACTION), transitively; outside and inside a transaction.
func TestGraphTruncateCascade(t *testing.T) {
	for _, inTx := range []bool{false, true} {
		t.Run(fmt.Sprintf("transaction=%v", inTx), func(t *testing.T) {
			db := dbtest.Postgres(t)
			e := graphSetup(t, db, graphFKSchema("NO ACTION"))
			m, p, b := graphFKSeed(t, e)
			member, profile, badge := graphMemberProbe(m.ID), graphProfileProbe(p.ID), graphBadgeProbe(b.ID)
			before := e.warm(t, member, profile, badge, graphUnrelatedProbe)
			if inTx {
				dbtest.Must(t, db.Transaction(func(tx *gorm.DB) error { return tx.Exec("TRUNCATE gr_members CASCADE").Error }))
			} else {
				e.exec(t, "TRUNCATE TABLE gr_members CASCADE")
			}
			e.fresh(t, member, before[member.name])
			e.fresh(t, profile, before[profile.name])
			e.fresh(t, badge, before[badge.name])
			e.hit(t, graphUnrelatedProbe, before[graphUnrelatedProbe.name])
		})
	}
}

// TestGraphFKCycles: foreign keys that form cycles (two tables referencing
// each other with ON UPDATE CASCADE, a table referencing itself with ON
// DELETE CASCADE, and a table hanging off that self-reference): following
// them ends, and what they change is fresh.
func TestGraphFKCycles(t *testing.T) {
	graphEach(t, func(t *testing.T, db *dbtest.DB) {
		ddl := []string{
			`CREATE TABLE gr_nodes (id {pk}, parent_id INTEGER REFERENCES gr_nodes (id) ON DELETE CASCADE, name TEXT NOT NULL)`,
			`CREATE TABLE gr_node_tags (id {pk}, node_id INTEGER NOT NULL REFERENCES gr_nodes (id) ON DELETE CASCADE, tag TEXT NOT NULL)`,
			graphUnrelatedSchema,
		}
		if db.Dialect == "postgres" {
			ddl = append(ddl,
				`CREATE TABLE gr_a (id {pk}, code INTEGER NOT NULL UNIQUE, b_code INTEGER)`,
				`CREATE TABLE gr_b (id {pk}, code INTEGER NOT NULL UNIQUE, a_code INTEGER REFERENCES gr_a (code) ON UPDATE CASCADE ON DELETE SET NULL)`,
				`ALTER TABLE gr_a ADD CONSTRAINT gr_a_b FOREIGN KEY (b_code) REFERENCES gr_b (code) ON UPDATE CASCADE ON DELETE SET NULL`,
			)
		} else {
			ddl = append(ddl,
				`CREATE TABLE gr_a (id {pk}, code INTEGER NOT NULL UNIQUE, b_code INTEGER REFERENCES gr_b (code) ON UPDATE CASCADE ON DELETE SET NULL)`,
				`CREATE TABLE gr_b (id {pk}, code INTEGER NOT NULL UNIQUE, a_code INTEGER REFERENCES gr_a (code) ON UPDATE CASCADE ON DELETE SET NULL)`,
			)
		}
		e := graphSetup(t, db, ddl)
		e.raw(t,
			`INSERT INTO gr_a (code) VALUES (1)`,
			`INSERT INTO gr_b (code, a_code) VALUES (10, 1)`,
			`UPDATE gr_a SET b_code = 10`,
			`INSERT INTO gr_nodes (name) VALUES ('root')`,
			`INSERT INTO gr_nodes (parent_id, name) VALUES (1, 'child')`,
			`INSERT INTO gr_nodes (parent_id, name) VALUES (2, 'grandchild')`,
			`INSERT INTO gr_node_tags (node_id, tag) VALUES (3, 'leaf')`,
			`INSERT INTO gr_unrelated (v) VALUES (1)`,
		)
		a := graphRows("gr_a rows", "SELECT id, code, b_code FROM gr_a ORDER BY id")
		b := graphRows("gr_b rows", "SELECT id, code, a_code FROM gr_b ORDER BY id")
		tags := graphRows("gr_node_tags rows", "SELECT id, node_id, tag FROM gr_node_tags ORDER BY id")

		before := e.warm(t, a, b, graphUnrelatedProbe)
		e.exec(t, "UPDATE gr_a SET code = 2")
		e.fresh(t, b, before[b.name])
		e.hit(t, graphUnrelatedProbe, before[graphUnrelatedProbe.name])
		before = e.warm(t, a, b)
		dbtest.Must(t, db.Table("gr_b").Where("code = ?", 10).Update("code", 20).Error)
		e.fresh(t, a, before[a.name])

		before = e.warm(t, tags, graphUnrelatedProbe)
		e.exec(t, "DELETE FROM gr_nodes WHERE parent_id IS NULL")
		e.fresh(t, tags, before[tags.name])
		e.hit(t, graphUnrelatedProbe, before[graphUnrelatedProbe.name])
	})
}

type grMixedMember struct {
	ID    uint
	Refer int
	Name  string
}

func (grMixedMember) TableName() string { return "GrMembers" }

type grMixedProfile struct {
	ID          uint
	MemberRefer *int
	Bio         string
}

func (grMixedProfile) TableName() string { return "GrProfiles" }

// TestGraphQuotedMixedCaseNames: tables and a view whose names are quoted
// and mixed-case ("GrMembers", "GrProfiles", "GrProfileView"): the catalog's
// names and the statements' are matched.
func TestGraphQuotedMixedCaseNames(t *testing.T) {
	graphEach(t, func(t *testing.T, db *dbtest.DB) {
		e := graphSetup(t, db, []string{
			`CREATE TABLE "GrMembers" (id {pk}, refer INTEGER NOT NULL UNIQUE, name TEXT NOT NULL DEFAULT '')`,
			`CREATE TABLE "GrProfiles" (id {pk}, member_refer INTEGER REFERENCES "GrMembers" (refer) ON UPDATE CASCADE ON DELETE CASCADE, bio TEXT NOT NULL DEFAULT '')`,
			`CREATE VIEW "GrProfileView" AS SELECT id, member_refer FROM "GrProfiles"`,
			graphUnrelatedSchema,
		})
		one := 1
		m := grMixedMember{Refer: 1, Name: "m"}
		dbtest.Must(t, e.plain.Create(&m).Error)
		p := grMixedProfile{MemberRefer: &one, Bio: "bio"}
		dbtest.Must(t, e.plain.Create(&p).Error)
		dbtest.Must(t, e.plain.Create(&grUnrelated{V: 1}).Error)
		profile := graphProbe{name: `"GrProfiles" First`, run: func(t *testing.T, tx *gorm.DB) string {
			var x grMixedProfile
			err := tx.First(&x, "id = ?", p.ID).Error
			return graphFirst(t, err, func() string { return fmt.Sprintf("%d:%s", x.ID, graphPtr(x.MemberRefer)) })
		}}
		view := graphRows(`"GrProfileView" rows`, `SELECT id, member_refer FROM "GrProfileView" ORDER BY id`)

		before := e.warm(t, profile, view, graphUnrelatedProbe)
		dbtest.Must(t, db.Model(&m).Update("Refer", 100).Error)
		e.fresh(t, profile, before[profile.name])
		e.fresh(t, view, before[view.name])
		e.hit(t, graphUnrelatedProbe, before[graphUnrelatedProbe.name])

		before = e.warm(t, profile, view)
		e.exec(t, `DELETE FROM "GrMembers" WHERE id = ?`, m.ID)
		e.fresh(t, profile, before[profile.name])
		e.fresh(t, view, before[view.name])
	})
}

// TestGraphEffectsReachViews: what a foreign-key action or a declared
// trigger changes is followed into the views over it: an update of a
// member's key cascades to gr_profiles and gr_badges, which
// gr_profile_badges joins; an order's triggers write gr_order_totals and
// gr_audit, which gr_totals_view and gr_audit_view read.
func TestGraphEffectsReachViews(t *testing.T) {
	graphEach(t, func(t *testing.T, db *dbtest.DB) {
		schema := graphFKSchema("CASCADE")
		schema = append(schema[:len(schema)-1:len(schema)-1], graphTriggerSchema(db.Dialect)...)
		schema = append(schema,
			`CREATE VIEW gr_profile_badges AS SELECT p.id AS id, p.member_refer AS member_refer, b.label AS label
				FROM gr_profiles p LEFT JOIN gr_badges b ON b.profile_refer = p.member_refer`,
			`CREATE VIEW gr_totals_view AS SELECT total FROM gr_order_totals`,
			`CREATE VIEW gr_audit_view AS SELECT COUNT(*) AS n FROM gr_audit`,
		)
		e := graphSetup(t, db, schema, graphTriggerOpts()...)
		m, _, _ := graphFKSeed(t, e)
		graphTriggerSeed(t, db)
		pb := graphRows("gr_profile_badges rows", "SELECT id, member_refer, label FROM gr_profile_badges ORDER BY id")
		totals := graphScalar("Raw gr_totals_view", "SELECT total FROM gr_totals_view")
		audits := graphScalar("Raw gr_audit_view", "SELECT n FROM gr_audit_view")

		before := e.warm(t, pb, totals, audits, graphUnrelatedProbe)
		dbtest.Must(t, db.Model(&m).Update("Refer", 100).Error)
		e.fresh(t, pb, before[pb.name])
		e.hit(t, totals, before[totals.name])
		e.hit(t, graphUnrelatedProbe, before[graphUnrelatedProbe.name])

		before = e.warm(t, pb, totals, audits)
		dbtest.Must(t, db.Create(&grOrder{Amount: 4}).Error)
		e.fresh(t, totals, before[totals.name])
		e.fresh(t, audits, before[audits.name])
		e.hit(t, pb, before[pb.name])
	})
}

// grBuyer has many grBigSaleC, whose table is a view.
type grBuyer struct {
	ID       uint
	Name     string
	BigSales []grBigSaleC `gorm:"foreignKey:CustomerID"`
}

func (grBuyer) TableName() string { return "gr_customers" }

type grBigSaleC struct {
	ID         uint
	Amount     int
	CustomerID uint
}

func (grBigSaleC) TableName() string { return "gr_big_sales_c" }

// TestGraphRelationshipCacheOverView: RelationshipCache of an association
// whose child table is a view (gr_big_sales_c over gr_sales): a write to
// the base table (GORM Create and Update, Exec) reloads the cached
// children. RelationshipCache entries depend on the child table's row and
// coarse tags, not only on its table tag.
func TestGraphRelationshipCacheOverView(t *testing.T) {
	probe := graphProbe{
		name: "gr_customers with BigSales (RelationshipCache over a view)",
		miss: 1,
		cached: func(tx *gorm.DB) *gorm.DB {
			return tx.Scopes(dogpile.FromCache("default"), dogpile.RelationshipCache("BigSales", "default"))
		},
		run: func(t *testing.T, tx *gorm.DB) string {
			var cs []grBuyer
			dbtest.Must(t, tx.Preload("BigSales", func(db *gorm.DB) *gorm.DB { return db.Order("id") }).Order("id").Find(&cs).Error)
			var sb strings.Builder
			for _, c := range cs {
				fmt.Fprintf(&sb, "%d:%s[", c.ID, c.Name)
				for _, s := range c.BigSales {
					fmt.Fprintf(&sb, "%d:%d;", s.ID, s.Amount)
				}
				sb.WriteString("] ")
			}
			return sb.String()
		},
	}
	writes := []struct {
		name  string
		write func(t *testing.T, e *graphEnv, first uint)
	}{
		{"Create", func(t *testing.T, e *graphEnv, first uint) {
			dbtest.Must(t, e.db.Create(&grSale{Amount: 50, CustomerID: &first}).Error)
		}},
		{"UpdateModel", func(t *testing.T, e *graphEnv, _ uint) {
			dbtest.Must(t, e.db.Model(&grSale{}).Where("amount = ?", 5).Update("amount", 60).Error)
		}},
		{"ExecDelete", func(t *testing.T, e *graphEnv, _ uint) { e.exec(t, "DELETE FROM gr_sales WHERE amount = ?", 15) }},
	}
	for _, d := range graphDialects {
		t.Run(d.name, func(t *testing.T) {
			for _, w := range writes {
				t.Run(w.name, func(t *testing.T) {
					e := graphSetup(t, d.open(t), []string{
						`CREATE TABLE gr_customers (id {pk}, name TEXT NOT NULL)`,
						`CREATE TABLE gr_sales (id {pk}, amount INTEGER NOT NULL, customer_id INTEGER REFERENCES gr_customers (id))`,
						`CREATE VIEW gr_big_sales_c AS SELECT id, amount, customer_id FROM gr_sales WHERE amount >= 10`,
						graphUnrelatedSchema,
					})
					var first uint
					for _, n := range []string{"ann", "bob"} {
						c := grBuyer{Name: n}
						dbtest.Must(t, e.plain.Create(&c).Error)
						if first == 0 {
							first = c.ID
						}
						for _, a := range []int{5, 15, 25} {
							dbtest.Must(t, e.plain.Create(&grSale{Amount: a, CustomerID: &c.ID}).Error)
						}
					}
					before := e.warm(t, probe)
					w.write(t, e, first)
					e.fresh(t, probe, before[probe.name])
				})
			}
		})
	}
}

// TestGraphViewShapes: views whose queries read their tables in the ways
// SQL allows (a CTE, a subquery in WHERE, EXISTS, a scalar subquery in the
// select list, UNION ALL, quoted names, a column list, lower-case keywords
// with an upper-case table name, a schema-qualified name): every write to
// a table one of them reads makes its cached read fresh. On SQLite the
// plugin finds the tables by scanning the view's SQL; on PostgreSQL from
// pg_depend.
func TestGraphViewShapes(t *testing.T) {
	graphEach(t, func(t *testing.T, db *dbtest.DB) {
		qualified := "main.gr_sales"
		if db.Dialect == "postgres" {
			qualified = "public.gr_sales"
		}
		e := graphSetup(t, db, []string{
			`CREATE TABLE gr_sales (id {pk}, amount INTEGER NOT NULL, customer_id INTEGER)`,
			`CREATE TABLE gr_refunds (id {pk}, sale_id INTEGER, amount INTEGER NOT NULL)`,
			`CREATE VIEW gr_v_cte AS WITH s AS (SELECT amount FROM gr_sales) SELECT SUM(amount) AS total FROM s`,
			`CREATE VIEW gr_v_in AS SELECT COUNT(*) AS n FROM gr_sales WHERE id IN (SELECT sale_id FROM gr_refunds)`,
			`CREATE VIEW gr_v_exists AS SELECT COUNT(*) AS n FROM gr_sales s WHERE EXISTS (SELECT 1 FROM gr_refunds r WHERE r.sale_id = s.id)`,
			`CREATE VIEW gr_v_scalar AS SELECT (SELECT SUM(amount) FROM gr_refunds) AS n`,
			`CREATE VIEW gr_v_union AS SELECT SUM(amount) AS n FROM (SELECT amount FROM gr_sales UNION ALL SELECT amount FROM gr_refunds) u`,
			`CREATE VIEW "gr_v_quoted" AS SELECT SUM("amount") AS n FROM "gr_sales"`,
			`CREATE VIEW gr_v_cols (n) AS SELECT SUM(amount) FROM gr_refunds`,
			`create view gr_v_lower as select sum(amount) as n from GR_SALES`,
			`CREATE VIEW gr_v_qualified AS SELECT SUM(amount) AS n FROM ` + qualified,
			`CREATE VIEW gr_v_join AS SELECT COUNT(*) AS n FROM gr_sales JOIN gr_refunds ON gr_refunds.sale_id = gr_sales.id`,
		})
		e.raw(t, `INSERT INTO gr_sales (amount) VALUES (5)`, `INSERT INTO gr_refunds (sale_id, amount) VALUES (NULL, 1)`)
		var probes []graphProbe
		for _, v := range []string{"gr_v_in", "gr_v_exists", "gr_v_scalar", "gr_v_union", "gr_v_quoted", "gr_v_cols", "gr_v_lower", "gr_v_qualified", "gr_v_join"} {
			probes = append(probes, graphScalar(v, "SELECT COALESCE(n, 0) FROM "+v))
		}
		probes = append(probes, graphScalar("gr_v_cte", "SELECT COALESCE(total, 0) FROM gr_v_cte"))
		writes := []struct {
			name  string
			write func(t *testing.T)
		}{
			{"InsertSale", func(t *testing.T) { dbtest.Must(t, db.Create(&grSale{Amount: 7}).Error) }},
			{"InsertRefundOfSale1", func(t *testing.T) { e.exec(t, "INSERT INTO gr_refunds (sale_id, amount) VALUES (1, 2)") }},
			{"UpdateRefunds", func(t *testing.T) { e.exec(t, "UPDATE gr_refunds SET amount = amount + 10") }},
			{"UpdateSales", func(t *testing.T) {
				dbtest.Must(t, db.Model(&grSale{}).Where("1 = 1").Update("amount", gorm.Expr("amount + 100")).Error)
			}},
		}
		for _, w := range writes {
			t.Run(w.name, func(t *testing.T) {
				before := e.warm(t, probes...)
				w.write(t)
				changed := 0
				for _, p := range probes {
					if e.truth(t, p) != before[p.name] {
						changed++
					}
					e.after(t, p, before[p.name])
				}
				if changed == 0 {
					t.Fatalf("test bug: the write changed no view")
				}
			})
		}
	})
}

// TestGraphWriteThroughView: a write to a view writes its base table. On
// PostgreSQL gr_big_sales is automatically updatable (Exec and a GORM model
// whose TableName is the view); on SQLite gr_sales_v is written through an
// INSTEAD OF trigger that nothing declares (a write of unknown tables).
// The base table's reads, and the other views over it, are fresh.
func TestGraphWriteThroughView(t *testing.T) {
	graphEach(t, func(t *testing.T, db *dbtest.DB) {
		ddl := append([]string(nil), graphViewSchema...)
		ddl = append(ddl, `CREATE VIEW gr_sales_v AS SELECT id, amount FROM gr_sales`)
		if db.Dialect == "sqlite" {
			ddl = append(ddl, `CREATE TRIGGER gr_sales_v_upd INSTEAD OF UPDATE ON gr_sales_v BEGIN
				UPDATE gr_sales SET amount = NEW.amount WHERE id = OLD.id; END`)
		}
		e := graphSetup(t, db, ddl)
		for _, a := range []int{5, 12, 30} {
			dbtest.Must(t, db.Create(&grSale{Amount: a}).Error)
		}
		sales := graphRows("gr_sales rows", "SELECT id, amount FROM gr_sales ORDER BY id")
		probes := []graphProbe{sales, graphTotalsProbe, graphReportProbe, graphBigProbe}

		before := e.warm(t, probes...)
		e.exec(t, "UPDATE gr_sales_v SET amount = amount + 100 WHERE id = ?", 3)
		for _, p := range probes {
			e.fresh(t, p, before[p.name])
		}
		if db.Dialect == "postgres" {
			before = e.warm(t, probes...)
			dbtest.Must(t, db.Model(&grBigSale{ID: 2}).Update("Amount", 77).Error)
			for _, p := range probes {
				e.fresh(t, p, before[p.name])
			}
		}
	})
}

// TestGraphPartitionsAndInheritance (PostgreSQL): a write to a partition
// (two levels of partitioning) changes what its parents read, a write to
// the parent changes what a partition reads; the same through table
// inheritance.
func TestGraphPartitionsAndInheritance(t *testing.T) {
	db := dbtest.Postgres(t)
	e := graphSetup(t, db, []string{
		`CREATE TABLE gr_events (id BIGSERIAL, kind TEXT NOT NULL, v INTEGER NOT NULL, PRIMARY KEY (id, kind, v)) PARTITION BY LIST (kind)`,
		`CREATE TABLE gr_events_a PARTITION OF gr_events FOR VALUES IN ('a')`,
		`CREATE TABLE gr_events_b PARTITION OF gr_events FOR VALUES IN ('b') PARTITION BY RANGE (v)`,
		`CREATE TABLE gr_events_b_low PARTITION OF gr_events_b FOR VALUES FROM (MINVALUE) TO (100)`,
		`CREATE TABLE gr_events_b_high PARTITION OF gr_events_b FOR VALUES FROM (100) TO (MAXVALUE)`,
		`CREATE TABLE gr_base (id BIGSERIAL PRIMARY KEY, v INTEGER NOT NULL)`,
		`CREATE TABLE gr_derived (extra TEXT) INHERITS (gr_base)`,
		graphUnrelatedSchema,
	})
	e.raw(t,
		`INSERT INTO gr_events (kind, v) VALUES ('a', 1), ('b', 2), ('b', 200)`,
		`INSERT INTO gr_base (v) VALUES (1)`, `INSERT INTO gr_derived (v, extra) VALUES (2, 'x')`,
		`INSERT INTO gr_unrelated (v) VALUES (1)`,
	)
	events := graphRows("gr_events rows", "SELECT kind, v FROM gr_events ORDER BY kind, v")
	a := graphRows("gr_events_a rows", "SELECT v FROM gr_events_a ORDER BY v")
	low := graphRows("gr_events_b_low rows", "SELECT v FROM gr_events_b_low ORDER BY v")
	base := graphRows("gr_base rows", "SELECT v FROM gr_base ORDER BY v")
	derived := graphRows("gr_derived rows", "SELECT v FROM gr_derived ORDER BY v")
	all := []graphProbe{events, a, low, base, derived, graphUnrelatedProbe}
	for _, w := range []struct {
		name  string
		sql   string
		fresh []graphProbe
	}{
		{"InsertIntoParent", `INSERT INTO gr_events (kind, v) VALUES ('a', 3)`, []graphProbe{events, a}},
		{"UpdatePartition", `UPDATE gr_events_a SET v = v + 10`, []graphProbe{events, a}},
		{"UpdateSubPartition", `UPDATE gr_events_b_low SET v = v + 1`, []graphProbe{events, low}},
		{"DeleteFromParent", `DELETE FROM gr_events WHERE kind = 'b' AND v < 100`, []graphProbe{events, low}},
		{"InsertIntoChild", `INSERT INTO gr_derived (v, extra) VALUES (3, 'y')`, []graphProbe{base, derived}},
		{"UpdateParent", `UPDATE gr_base SET v = v + 10`, []graphProbe{base, derived}},
	} {
		t.Run(w.name, func(t *testing.T) {
			before := e.warm(t, all...)
			e.exec(t, w.sql)
			for _, p := range w.fresh {
				e.fresh(t, p, before[p.name])
			}
			for _, p := range all {
				e.equal(t, p)
			}
			e.hit(t, graphUnrelatedProbe, before[graphUnrelatedProbe.name])
		})
	}
}

// TestGraphRule (PostgreSQL): a rule that also writes another table is an
// undeclared trigger: a write to its table invalidates every entry.
func TestGraphRule(t *testing.T) {
	db := dbtest.Postgres(t)
	e := graphSetup(t, db, []string{
		`CREATE TABLE gr_tickets (id {pk}, title TEXT NOT NULL)`,
		`CREATE TABLE gr_ticket_log (id {pk}, note TEXT NOT NULL)`,
		`CREATE RULE gr_tickets_log AS ON INSERT TO gr_tickets DO ALSO INSERT INTO gr_ticket_log (note) VALUES (NEW.title)`,
		graphUnrelatedSchema,
	})
	dbtest.Must(t, db.Create(&grUnrelated{V: 1}).Error)
	before := e.warm(t, graphTicketLogProbe, graphUnrelatedProbe)
	e.exec(t, "INSERT INTO gr_tickets (title) VALUES (?)", "ruled")
	e.fresh(t, graphTicketLogProbe, before[graphTicketLogProbe.name])
	e.missed(t, graphUnrelatedProbe, before[graphUnrelatedProbe.name])
}

// TestGraphRenameTable: after ALTER TABLE … RENAME, a write to the parent
// under its new name follows its foreign keys.
func TestGraphRenameTable(t *testing.T) {
	graphEach(t, func(t *testing.T, db *dbtest.DB) {
		e := graphSetup(t, db, graphFKSchema("CASCADE"))
		m, p, b := graphFKSeed(t, e)
		e.exec(t, "ALTER TABLE gr_members RENAME TO gr_people")
		profile, badge := graphProfileProbe(p.ID), graphBadgeProbe(b.ID)
		before := e.warm(t, profile, badge, graphUnrelatedProbe)
		e.exec(t, "UPDATE gr_people SET refer = ? WHERE id = ?", 100, m.ID)
		e.fresh(t, profile, before[profile.name])
		e.fresh(t, badge, before[badge.name])
		e.hit(t, graphUnrelatedProbe, before[graphUnrelatedProbe.name])
	})
}

// TestGraphDDLInTransaction: a constraint added inside a transaction is
// followed once the transaction commits: through AutoMigrate in
// db.Transaction (both databases), and on PostgreSQL through Exec in a
// transaction left open while the plugin's pool runs a write and a read
// outside it (which must not settle the graph without the constraint).
func TestGraphDDLInTransaction(t *testing.T) {
	check := func(t *testing.T, e *graphEnv, m grAmMember, p grAmProfile) {
		t.Helper()
		profile := graphAmProfileProbe(p.ID)
		before := e.warm(t, profile, graphUnrelatedProbe)
		dbtest.Must(t, e.db.Model(&m).Update("Refer", 100).Error)
		if got := e.truth(t, profile); !strings.Contains(got, "member=100") {
			t.Fatalf("test bug: no cascade: %q", got)
		}
		e.fresh(t, profile, before[profile.name])
		e.hit(t, graphUnrelatedProbe, before[graphUnrelatedProbe.name])
	}
	seed := func(t *testing.T, db *dbtest.DB) (grAmMember, grAmProfile) {
		m := grAmMember{Refer: 1, Name: "m"}
		dbtest.Must(t, db.Create(&m).Error)
		p := grAmProfile{MemberRefer: 1, Bio: "bio"}
		dbtest.Must(t, db.Create(&p).Error)
		dbtest.Must(t, db.Create(&grUnrelated{V: 1}).Error)
		return m, p
	}
	for _, d := range graphDialects {
		t.Run(d.name+"/AutoMigrateInTransaction", func(t *testing.T) {
			db := d.open(t)
			e := graphSetup(t, db, []string{graphUnrelatedSchema})
			dbtest.Must(t, db.AutoMigrate(&grAmMember{}, &grAmProfile{}))
			m, p := seed(t, db)
			e.warm(t, graphAmProfileProbe(p.ID))
			dbtest.Must(t, db.Transaction(func(tx *gorm.DB) error { return tx.AutoMigrate(&grAmProfileFK{}) }))
			check(t, e, m, p)
		})
	}
	t.Run("postgres/OpenTransactionMeanwhile", func(t *testing.T) {
		db := dbtest.Postgres(t)
		e := graphSetup(t, db, []string{graphUnrelatedSchema})
		dbtest.Must(t, db.AutoMigrate(&grAmMember{}, &grAmProfile{}))
		m, p := seed(t, db)
		tx := db.Begin()
		dbtest.Must(t, tx.Error)
		defer tx.Rollback()
		dbtest.Must(t, tx.Exec(`ALTER TABLE gr_am_profiles ADD CONSTRAINT gr_am_fk FOREIGN KEY (member_refer)
			REFERENCES gr_am_members (refer) ON UPDATE CASCADE ON DELETE CASCADE`).Error)
		// Outside the transaction, meanwhile: a write and a cached read.
		dbtest.Must(t, db.Create(&grUnrelated{V: 2}).Error)
		e.read(t, graphUnrelatedProbe)
		dbtest.Must(t, tx.Commit().Error)
		check(t, e, m, p)
	})
}

// TestGraphRegions: what the graph adds is invalidated in every region: a
// profile cached in two regions is fresh in both after a cascade.
func TestGraphRegions(t *testing.T) {
	graphEach(t, func(t *testing.T, db *dbtest.DB) {
		e := graphSetupRegions(t, db, graphFKSchema("CASCADE"), []string{"default", "other"})
		m, p, _ := graphFKSeed(t, e)
		inDefault := graphProfileProbe(p.ID)
		inOther := graphProfileProbe(p.ID)
		inOther.name += ` in region "other"`
		inOther.cached = func(tx *gorm.DB) *gorm.DB { return tx.Scopes(dogpile.FromCache("other")) }
		before := e.warm(t, inDefault, inOther)
		dbtest.Must(t, db.Model(&m).Update("Refer", 100).Error)
		e.fresh(t, inDefault, before[inDefault.name])
		e.fresh(t, inOther, before[inOther.name])
	})
}

// TestGraphViewCallingFunction (PostgreSQL): a view whose query calls a
// function that reads a table. pg_depend records the function, not the
// table its body reads, so the catalog does not say that the view reads
// gr_sales: a cached read of the view must not be served after a write to
// gr_sales all the same (the plugin cannot know what the function reads,
// as for raw SQL it cannot analyse).
func TestGraphViewCallingFunction(t *testing.T) {
	db := dbtest.Postgres(t)
	e := graphSetup(t, db, []string{
		`CREATE TABLE gr_sales (id {pk}, amount INTEGER NOT NULL, customer_id INTEGER)`,
		`CREATE FUNCTION gr_sales_sum() RETURNS bigint LANGUAGE sql STABLE AS $$ SELECT COALESCE(SUM(amount), 0) FROM gr_sales $$`,
		`CREATE VIEW gr_v_func AS SELECT gr_sales_sum() AS total`,
		graphUnrelatedSchema,
	})
	dbtest.Must(t, db.Create(&grSale{Amount: 5}).Error)
	direct := graphScalar("Raw SELECT gr_sales_sum()", "SELECT gr_sales_sum()")
	view := graphScalar("Raw gr_v_func (a view calling a function)", "SELECT total FROM gr_v_func")
	before := map[string]string{}
	for _, p := range []graphProbe{direct, view} {
		e.read(t, p)
		got, _ := e.read(t, p)
		before[p.name] = got
	}
	dbtest.Must(t, db.Create(&grSale{Amount: 6}).Error)
	e.after(t, direct, before[direct.name])
	e.after(t, view, before[view.name])
}

// TestGraphViewShadowedInOtherSchema (PostgreSQL): public.gr_sale_totals
// is a view over gr_sales; another schema has a table of the same name,
// created after it. A read of gr_sale_totals (the view, by search_path)
// still depends on gr_sales.
func TestGraphViewShadowedInOtherSchema(t *testing.T) {
	db := dbtest.Postgres(t)
	e := graphSetup(t, db, []string{
		`CREATE TABLE gr_sales (id {pk}, amount INTEGER NOT NULL, customer_id INTEGER)`,
		`CREATE VIEW gr_sale_totals AS SELECT SUM(amount) AS total FROM gr_sales`,
		`CREATE SCHEMA gr_other`,
		`CREATE TABLE gr_other.gr_sale_totals (total INTEGER)`,
		graphUnrelatedSchema,
	})
	dbtest.Must(t, db.Create(&grSale{Amount: 5}).Error)
	before := e.warm(t, graphTotalsProbe)
	dbtest.Must(t, db.Create(&grSale{Amount: 6}).Error)
	e.fresh(t, graphTotalsProbe, before[graphTotalsProbe.name])
}
