package dogpile_test

// The schema graph is read again after DDL the plugin sees: AutoMigrate,
// Migrator calls, Exec of CREATE / ALTER / DROP. Each case registers the
// plugin first, then changes the schema through it, then checks that the
// new dependency is followed (or a removed one no longer is). See
// graph_test.go for the harness.

import (
	"fmt"
	"testing"

	"gorm.io/gorm"

	"github.com/dogpile-go/dogpile/internal/dbtest"
)

// gr_am_members ← gr_am_profiles, without and with the constraint.

type grAmMember struct {
	ID    uint
	Refer int `gorm:"uniqueIndex"`
	Name  string
}

func (grAmMember) TableName() string { return "gr_am_members" }

type grAmProfile struct {
	ID          uint
	MemberRefer int
	Bio         string
}

func (grAmProfile) TableName() string { return "gr_am_profiles" }

// grAmProfileFK is grAmProfile with the foreign key, as the issue writes it.
type grAmProfileFK struct {
	ID          uint
	MemberRefer int
	Bio         string
	Member      grAmMember `gorm:"foreignKey:MemberRefer;references:Refer;constraint:OnUpdate:CASCADE,OnDelete:CASCADE;"`
}

func (grAmProfileFK) TableName() string { return "gr_am_profiles" }

type grRefund struct {
	ID     uint
	Amount int
}

func (grRefund) TableName() string { return "gr_refunds" }

func graphAmProfileProbe(id uint) graphProbe {
	return graphProbe{name: "gr_am_profiles First", run: func(t *testing.T, tx *gorm.DB) string {
		var p grAmProfile
		err := tx.First(&p, "id = ?", id).Error
		return graphFirst(t, err, func() string { return fmt.Sprintf("profile %d member=%d bio=%s", p.ID, p.MemberRefer, p.Bio) })
	}}
}

// TestGraphRefreshAfterDDL: a foreign key, a view or a trigger added after
// the plugin was registered, through AutoMigrate, a Migrator call or Exec,
// is followed by the next write; a trigger dropped no longer makes writes
// unknown. Fails without the refresh (and on the stub): the cascade, the
// view and the trigger are not followed.
func TestGraphRefreshAfterDDL(t *testing.T) {
	// FK cases: ddl adds the constraint ON UPDATE CASCADE ON DELETE CASCADE
	// from gr_am_profiles.member_refer to gr_am_members.refer; pre is the
	// schema before it (through the plugin: AutoMigrate).
	fkCases := []struct {
		name   string
		pgOnly bool
		pre    func(t *testing.T, e *graphEnv)
		ddl    func(t *testing.T, e *graphEnv)
	}{
		{
			name: "AutoMigrateAddsConstraint",
			pre:  func(t *testing.T, e *graphEnv) { dbtest.Must(t, e.db.AutoMigrate(&grAmMember{}, &grAmProfile{})) },
			ddl:  func(t *testing.T, e *graphEnv) { dbtest.Must(t, e.db.AutoMigrate(&grAmProfileFK{})) },
		},
		{
			name: "AutoMigrateCreatesTableWithConstraint",
			pre:  func(t *testing.T, e *graphEnv) { dbtest.Must(t, e.db.AutoMigrate(&grAmMember{})) },
			ddl:  func(t *testing.T, e *graphEnv) { dbtest.Must(t, e.db.AutoMigrate(&grAmProfileFK{})) },
		},
		{
			name: "MigratorCreateConstraint",
			pre:  func(t *testing.T, e *graphEnv) { dbtest.Must(t, e.db.AutoMigrate(&grAmMember{}, &grAmProfile{})) },
			ddl: func(t *testing.T, e *graphEnv) {
				dbtest.Must(t, e.db.Migrator().CreateConstraint(&grAmProfileFK{}, "Member"))
			},
		},
		{
			name:   "ExecAlterTableAddConstraint",
			pgOnly: true,
			pre:    func(t *testing.T, e *graphEnv) { dbtest.Must(t, e.db.AutoMigrate(&grAmMember{}, &grAmProfile{})) },
			ddl: func(t *testing.T, e *graphEnv) {
				e.exec(t, `ALTER TABLE gr_am_profiles ADD CONSTRAINT gr_am_fk FOREIGN KEY (member_refer)
					REFERENCES gr_am_members (refer) ON UPDATE CASCADE ON DELETE CASCADE`)
			},
		},
		{
			name: "ExecCreateTableWithConstraint",
			pre:  func(t *testing.T, e *graphEnv) { dbtest.Must(t, e.db.AutoMigrate(&grAmMember{})) },
			ddl: func(t *testing.T, e *graphEnv) {
				e.exec(t, `CREATE TABLE gr_am_profiles (id {pk}, member_refer INTEGER
					REFERENCES gr_am_members (refer) ON UPDATE CASCADE ON DELETE CASCADE, bio TEXT NOT NULL DEFAULT '')`)
			},
		},
	}
	for _, d := range graphDialects {
		t.Run(d.name, func(t *testing.T) {
			for _, c := range fkCases {
				if c.pgOnly && d.name != "postgres" {
					continue
				}
				t.Run(c.name, func(t *testing.T) {
					db := d.open(t)
					e := graphSetup(t, db, []string{graphUnrelatedSchema})
					c.pre(t, e)
					m := grAmMember{Refer: 1, Name: "m"}
					dbtest.Must(t, db.Create(&m).Error)
					dbtest.Must(t, db.Create(&grUnrelated{V: 1}).Error)
					var p grAmProfile
					hasProfiles := e.plain.Migrator().HasTable("gr_am_profiles")
					if hasProfiles {
						// Cached before the constraint exists.
						p = grAmProfile{MemberRefer: 1, Bio: "bio"}
						dbtest.Must(t, db.Create(&p).Error)
						e.warm(t, graphAmProfileProbe(p.ID))
					}
					c.ddl(t, e)
					if !hasProfiles {
						p = grAmProfile{MemberRefer: 1, Bio: "bio"}
						dbtest.Must(t, db.Create(&p).Error)
					}
					profile := graphAmProfileProbe(p.ID)
					before := e.warm(t, profile, graphUnrelatedProbe)

					dbtest.Must(t, db.Model(&m).Update("Refer", 100).Error)
					if got, want := e.truth(t, profile), fmt.Sprintf("profile %d member=100 bio=bio", p.ID); got != want {
						t.Fatalf("test bug: the constraint did not cascade: database %q; want %q", got, want)
					}
					e.fresh(t, profile, before[profile.name])
					e.hit(t, graphUnrelatedProbe, before[graphUnrelatedProbe.name])

					before = e.warm(t, profile)
					dbtest.Must(t, db.Delete(&m).Error)
					if got := e.truth(t, profile); got != "not found" {
						t.Fatalf("test bug: the constraint did not cascade the delete: database %q", got)
					}
					e.fresh(t, profile, before[profile.name])
				})
			}

			t.Run("ExecCreateView", func(t *testing.T) {
				db := d.open(t)
				e := graphSetup(t, db, []string{`CREATE TABLE gr_sales (id {pk}, amount INTEGER NOT NULL, customer_id INTEGER)`, graphUnrelatedSchema})
				dbtest.Must(t, db.Create(&grSale{Amount: 5}).Error)
				dbtest.Must(t, db.Create(&grUnrelated{V: 1}).Error)
				e.exec(t, `CREATE VIEW gr_sale_totals AS SELECT SUM(amount) AS total FROM gr_sales`)
				e.exec(t, `CREATE VIEW gr_sale_report AS SELECT total * 2 AS doubled FROM gr_sale_totals`)
				before := e.warm(t, graphTotalsProbe, graphReportProbe, graphUnrelatedProbe)
				dbtest.Must(t, db.Create(&grSale{Amount: 6}).Error)
				e.fresh(t, graphTotalsProbe, before[graphTotalsProbe.name])
				e.fresh(t, graphReportProbe, before[graphReportProbe.name])
				e.hit(t, graphUnrelatedProbe, before[graphUnrelatedProbe.name])
			})
			t.Run("MigratorCreateView", func(t *testing.T) {
				db := d.open(t)
				e := graphSetup(t, db, []string{`CREATE TABLE gr_sales (id {pk}, amount INTEGER NOT NULL, customer_id INTEGER)`, graphUnrelatedSchema})
				dbtest.Must(t, db.Create(&grSale{Amount: 5}).Error)
				dbtest.Must(t, db.Create(&grUnrelated{V: 1}).Error)
				dbtest.Must(t, db.Migrator().CreateView("gr_sale_totals", gorm.ViewOption{
					Query: e.plain.Table("gr_sales").Select("SUM(amount) AS total"),
				}))
				before := e.warm(t, graphTotalsProbe, graphUnrelatedProbe)
				dbtest.Must(t, db.Exec("UPDATE gr_sales SET amount = amount + 1").Error)
				e.fresh(t, graphTotalsProbe, before[graphTotalsProbe.name])
				e.hit(t, graphUnrelatedProbe, before[graphUnrelatedProbe.name])
			})
			t.Run("ExecReplaceView", func(t *testing.T) {
				// gr_sale_totals is redefined over gr_refunds: writes to
				// gr_refunds now change it.
				db := d.open(t)
				e := graphSetup(t, db, []string{
					`CREATE TABLE gr_sales (id {pk}, amount INTEGER NOT NULL, customer_id INTEGER)`,
					`CREATE TABLE gr_refunds (id {pk}, amount INTEGER NOT NULL)`,
					`CREATE VIEW gr_sale_totals AS SELECT SUM(amount) AS total FROM gr_sales`,
					graphUnrelatedSchema,
				})
				dbtest.Must(t, db.Create(&grSale{Amount: 5}).Error)
				dbtest.Must(t, db.Create(&grRefund{Amount: 2}).Error)
				dbtest.Must(t, db.Create(&grUnrelated{V: 1}).Error)
				e.warm(t, graphTotalsProbe)
				e.exec(t, `DROP VIEW gr_sale_totals`)
				e.exec(t, `CREATE VIEW gr_sale_totals AS SELECT SUM(amount) AS total FROM gr_refunds`)
				before := e.warm(t, graphTotalsProbe, graphUnrelatedProbe)
				dbtest.Must(t, db.Create(&grRefund{Amount: 3}).Error)
				e.fresh(t, graphTotalsProbe, before[graphTotalsProbe.name])
				e.hit(t, graphUnrelatedProbe, before[graphUnrelatedProbe.name])
				// gr_sales is no longer read by the view: equal either way.
				dbtest.Must(t, db.Create(&grSale{Amount: 4}).Error)
				if !e.equal(t, graphTotalsProbe) {
					t.Logf("a write to gr_sales, no longer under the view, invalidated it: correct, not precise")
				}
			})
			t.Run("ExecCreateTrigger", func(t *testing.T) {
				db := d.open(t)
				schema := graphTicketSchema(d.name)
				e := graphSetup(t, db, append(schema[:2:2], graphUnrelatedSchema))
				dbtest.Must(t, db.Create(&grTicket{Title: "before"}).Error)
				dbtest.Must(t, db.Create(&grUnrelated{V: 1}).Error)
				for _, s := range graphTicketTrigger(d.name) {
					e.exec(t, s)
				}
				before := e.warm(t, graphTicketLogProbe, graphUnrelatedProbe)
				dbtest.Must(t, db.Create(&grTicket{Title: "after"}).Error)
				e.fresh(t, graphTicketLogProbe, before[graphTicketLogProbe.name])
				e.missed(t, graphUnrelatedProbe, before[graphUnrelatedProbe.name])
			})
			t.Run("ExecDropTrigger", func(t *testing.T) {
				// Precision: after DROP TRIGGER, a write to gr_tickets is a
				// write of gr_tickets alone again.
				db := d.open(t)
				e := graphSetup(t, db, append(graphTicketSchema(d.name), graphUnrelatedSchema))
				dbtest.Must(t, db.Create(&grUnrelated{V: 1}).Error)
				before := e.warm(t, graphTicketLogProbe, graphUnrelatedProbe)
				dbtest.Must(t, db.Create(&grTicket{Title: "logged"}).Error)
				e.fresh(t, graphTicketLogProbe, before[graphTicketLogProbe.name])
				e.missed(t, graphUnrelatedProbe, before[graphUnrelatedProbe.name])
				for _, s := range graphDropTicketTrigger(d.name) {
					e.exec(t, s)
				}
				before = e.warm(t, graphTicketsProbe, graphTicketLogProbe, graphUnrelatedProbe)
				dbtest.Must(t, db.Create(&grTicket{Title: "not logged"}).Error)
				e.fresh(t, graphTicketsProbe, before[graphTicketsProbe.name])
				e.hit(t, graphTicketLogProbe, before[graphTicketLogProbe.name])
				e.hit(t, graphUnrelatedProbe, before[graphUnrelatedProbe.name])
			})
		})
	}
}
