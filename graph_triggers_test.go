package dogpile_test

// Triggers in the schema graph: WithTriggerWrites declares the tables a
// table's triggers write; a write to a table with an undeclared trigger is
// a write of unknown tables (every entry invalidated); the plugin's own
// triggers (named dogpile_…) do not count. See graph_test.go for the
// harness.

import (
	"fmt"
	"strings"
	"testing"

	"gorm.io/gorm"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/internal/dbtest"
)

type grOrder struct {
	ID     uint
	Amount int
}

func (grOrder) TableName() string { return "gr_orders" }

type grTicket struct {
	ID    uint
	Title string
}

func (grTicket) TableName() string { return "gr_tickets" }

type grFeed struct {
	ID uint
	V  int
}

func (grFeed) TableName() string { return "gr_feed" }

// graphTriggerSchema: gr_orders' triggers keep gr_order_totals (row 1) and
// append to gr_audit; gr_tickets' trigger appends to gr_ticket_log; gr_feed
// has only a trigger named like the plugin's own (dogpile_…), which writes
// no table; gr_unrelated has none.
func graphTriggerSchema(dialect string) []string {
	ddl := []string{
		`CREATE TABLE gr_orders (id {pk}, amount INTEGER NOT NULL)`,
		`CREATE TABLE gr_order_totals (id {pk}, total INTEGER NOT NULL)`,
		`INSERT INTO gr_order_totals (id, total) VALUES (1, 0)`,
		`CREATE TABLE gr_audit (id {pk}, note TEXT NOT NULL)`,
		`CREATE TABLE gr_feed (id {pk}, v INTEGER NOT NULL)`,
		graphUnrelatedSchema,
	}
	ddl = append(ddl, graphTicketSchema(dialect)...)
	if dialect == "postgres" {
		return append(ddl,
			`CREATE FUNCTION gr_orders_trg() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN
				IF TG_OP = 'INSERT' THEN
					UPDATE gr_order_totals SET total = total + NEW.amount WHERE id = 1;
				ELSIF TG_OP = 'UPDATE' THEN
					UPDATE gr_order_totals SET total = total - OLD.amount + NEW.amount WHERE id = 1;
				ELSE
					UPDATE gr_order_totals SET total = total - OLD.amount WHERE id = 1;
				END IF;
				INSERT INTO gr_audit (note) VALUES (lower(TG_OP));
				RETURN NULL;
			END $$`,
			`CREATE TRIGGER gr_orders_t AFTER INSERT OR UPDATE OR DELETE ON gr_orders FOR EACH ROW EXECUTE FUNCTION gr_orders_trg()`,
			`CREATE FUNCTION gr_feed_trg() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN
				PERFORM pg_notify('gr_feed_test', TG_TABLE_NAME);
				RETURN NULL;
			END $$`,
			`CREATE TRIGGER dogpile_gr_feed AFTER INSERT OR UPDATE OR DELETE ON gr_feed FOR EACH ROW EXECUTE FUNCTION gr_feed_trg()`,
		)
	}
	return append(ddl,
		`CREATE TRIGGER gr_orders_ins AFTER INSERT ON gr_orders BEGIN
			UPDATE gr_order_totals SET total = total + NEW.amount WHERE id = 1;
			INSERT INTO gr_audit (note) VALUES ('insert');
		END`,
		`CREATE TRIGGER gr_orders_upd AFTER UPDATE ON gr_orders BEGIN
			UPDATE gr_order_totals SET total = total - OLD.amount + NEW.amount WHERE id = 1;
			INSERT INTO gr_audit (note) VALUES ('update');
		END`,
		`CREATE TRIGGER gr_orders_del AFTER DELETE ON gr_orders BEGIN
			UPDATE gr_order_totals SET total = total - OLD.amount WHERE id = 1;
			INSERT INTO gr_audit (note) VALUES ('delete');
		END`,
		`CREATE TRIGGER dogpile_gr_feed_ins AFTER INSERT ON gr_feed BEGIN SELECT 1; END`,
		`CREATE TRIGGER dogpile_gr_feed_upd AFTER UPDATE ON gr_feed BEGIN SELECT 1; END`,
	)
}

// graphTicketSchema: gr_tickets and gr_ticket_log, with the trigger that
// logs every insert and update of a ticket (graphTicketTrigger).
func graphTicketSchema(dialect string) []string {
	return append([]string{
		`CREATE TABLE gr_tickets (id {pk}, title TEXT NOT NULL)`,
		`CREATE TABLE gr_ticket_log (id {pk}, note TEXT NOT NULL)`,
	}, graphTicketTrigger(dialect)...)
}

// graphTicketTrigger is the DDL of gr_tickets' logging trigger.
func graphTicketTrigger(dialect string) []string {
	if dialect == "postgres" {
		// A statement-level trigger, for variety.
		return []string{
			`CREATE FUNCTION gr_tickets_trg() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN
				INSERT INTO gr_ticket_log (note) VALUES (lower(TG_OP));
				RETURN NULL;
			END $$`,
			`CREATE TRIGGER gr_tickets_t AFTER INSERT OR UPDATE ON gr_tickets FOR EACH STATEMENT EXECUTE FUNCTION gr_tickets_trg()`,
		}
	}
	return []string{
		`CREATE TRIGGER gr_tickets_ins AFTER INSERT ON gr_tickets BEGIN INSERT INTO gr_ticket_log (note) VALUES (NEW.title); END`,
		`CREATE TRIGGER gr_tickets_upd AFTER UPDATE ON gr_tickets BEGIN INSERT INTO gr_ticket_log (note) VALUES (NEW.title); END`,
	}
}

// graphDropTicketTrigger is the DDL that removes graphTicketTrigger.
func graphDropTicketTrigger(dialect string) []string {
	if dialect == "postgres" {
		return []string{`DROP TRIGGER gr_tickets_t ON gr_tickets`}
	}
	return []string{`DROP TRIGGER gr_tickets_ins`, `DROP TRIGGER gr_tickets_upd`}
}

// graphCount is a cached Count of a table.
func graphCount(table string) graphProbe {
	return graphProbe{name: "Count " + table, run: func(t *testing.T, tx *gorm.DB) string {
		var n int64
		dbtest.Must(t, tx.Table(table).Count(&n).Error)
		return fmt.Sprint(n)
	}}
}

var (
	graphOrderTotalsProbe = graphScalar("Raw gr_order_totals", "SELECT total FROM gr_order_totals WHERE id = 1")
	graphAuditProbe       = graphCount("gr_audit")
	graphTicketLogProbe   = graphCount("gr_ticket_log")
	graphOrdersProbe      = graphProbe{name: "gr_orders Find", run: func(t *testing.T, tx *gorm.DB) string {
		var os []grOrder
		dbtest.Must(t, tx.Order("id").Find(&os).Error)
		var sb strings.Builder
		for _, o := range os {
			fmt.Fprintf(&sb, "%d:%d;", o.ID, o.Amount)
		}
		return sb.String()
	}}
	graphTicketsProbe = graphProbe{name: "gr_tickets Find", run: func(t *testing.T, tx *gorm.DB) string {
		var ts []grTicket
		dbtest.Must(t, tx.Order("id").Find(&ts).Error)
		var sb strings.Builder
		for _, x := range ts {
			fmt.Fprintf(&sb, "%d:%s;", x.ID, x.Title)
		}
		return sb.String()
	}}
	graphFeedProbe = graphProbe{name: "gr_feed Find", run: func(t *testing.T, tx *gorm.DB) string {
		var fs []grFeed
		dbtest.Must(t, tx.Order("id").Find(&fs).Error)
		var sb strings.Builder
		for _, f := range fs {
			fmt.Fprintf(&sb, "%d:%d;", f.ID, f.V)
		}
		return sb.String()
	}}
)

// graphTriggerOpts declares gr_orders' trigger writes (the issue's
// example, with this file's table names).
func graphTriggerOpts() []dogpile.PluginOption {
	return []dogpile.PluginOption{dogpile.WithTriggerWrites("gr_orders", "gr_order_totals", "gr_audit")}
}

// graphTriggerSeed makes, through the plugin, one row in each table the
// probes read.
func graphTriggerSeed(t *testing.T, db *dbtest.DB) {
	t.Helper()
	dbtest.Must(t, db.Create(&grOrder{Amount: 3}).Error)
	dbtest.Must(t, db.Create(&grTicket{Title: "first"}).Error)
	dbtest.Must(t, db.Create(&grFeed{V: 1}).Error)
	dbtest.Must(t, db.Create(&grUnrelated{V: 1}).Error)
}

// TestGraphTriggerWrites: with WithTriggerWrites("gr_orders",
// "gr_order_totals", "gr_audit"), a write to gr_orders, through model
// methods and Exec, outside and inside a transaction, invalidates
// gr_order_totals and gr_audit (their cached reads miss and read what the
// triggers wrote) and not the unrelated tables (gr_unrelated and
// gr_ticket_log stay hits: gr_orders' triggers are declared, so a write to
// it is not a write of unknown tables). Fails without the option's effect:
// the totals and the audit count stay cached.
func TestGraphTriggerWrites(t *testing.T) {
	graphEach(t, func(t *testing.T, db *dbtest.DB) {
		e := graphSetup(t, db, graphTriggerSchema(db.Dialect), graphTriggerOpts()...)
		graphTriggerSeed(t, db)
		written := []graphProbe{graphOrdersProbe, graphOrderTotalsProbe, graphAuditProbe}
		untouched := []graphProbe{graphUnrelatedProbe, graphTicketLogProbe}
		cases := []struct {
			name  string
			write func(t *testing.T, tx *gorm.DB, o grOrder)
			tx    bool
		}{
			{"Create", func(t *testing.T, tx *gorm.DB, _ grOrder) { dbtest.Must(t, tx.Create(&grOrder{Amount: 10}).Error) }, false},
			{"Update", func(t *testing.T, tx *gorm.DB, o grOrder) { dbtest.Must(t, tx.Model(&o).Update("Amount", 25).Error) }, false},
			{"Delete", func(t *testing.T, tx *gorm.DB, o grOrder) { dbtest.Must(t, tx.Delete(&o).Error) }, false},
			{"ExecInsert", func(t *testing.T, tx *gorm.DB, _ grOrder) {
				dbtest.Must(t, tx.Exec("INSERT INTO gr_orders (amount) VALUES (?)", 11).Error)
			}, false},
			{"ExecUpdate", func(t *testing.T, tx *gorm.DB, o grOrder) {
				dbtest.Must(t, tx.Exec("UPDATE gr_orders SET amount = amount + 1 WHERE id = ?", o.ID).Error)
			}, false},
			{"CreateInTransaction", func(t *testing.T, tx *gorm.DB, _ grOrder) { dbtest.Must(t, tx.Create(&grOrder{Amount: 12}).Error) }, true},
			{"ExecDeleteInTransaction", func(t *testing.T, tx *gorm.DB, o grOrder) {
				dbtest.Must(t, tx.Exec("DELETE FROM gr_orders WHERE id = ?", o.ID).Error)
			}, true},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				o := grOrder{Amount: 7}
				dbtest.Must(t, db.Create(&o).Error)
				before := e.warm(t, append(written[:len(written):len(written)], untouched...)...)
				if c.tx {
					dbtest.Must(t, db.Transaction(func(tx *gorm.DB) error {
						c.write(t, tx, o)
						return nil
					}))
				} else {
					c.write(t, db.DB, o)
				}
				for _, p := range written {
					e.fresh(t, p, before[p.name])
				}
				for _, p := range untouched {
					e.hit(t, p, before[p.name])
				}
			})
		}
	})
}

// TestGraphUndeclaredTrigger: gr_tickets has a trigger that writes
// gr_ticket_log and nothing declares it. A write to gr_tickets is a write
// of unknown tables: every entry is invalidated (the cached reads of
// gr_unrelated and gr_order_totals, which the write did not change, miss
// once: counted), and gr_ticket_log's cached count is fresh. Fails without
// the graph: gr_ticket_log stays cached, gr_unrelated stays a hit.
func TestGraphUndeclaredTrigger(t *testing.T) {
	graphEach(t, func(t *testing.T, db *dbtest.DB) {
		// gr_orders' writes are declared: only gr_tickets' trigger is not.
		e := graphSetup(t, db, graphTriggerSchema(db.Dialect), graphTriggerOpts()...)
		graphTriggerSeed(t, db)
		cases := []struct {
			name  string
			write func(t *testing.T, tx *gorm.DB, x grTicket)
			tx    bool
		}{
			{"Create", func(t *testing.T, tx *gorm.DB, _ grTicket) { dbtest.Must(t, tx.Create(&grTicket{Title: "new"}).Error) }, false},
			{"Update", func(t *testing.T, tx *gorm.DB, x grTicket) {
				dbtest.Must(t, tx.Model(&x).Update("Title", "renamed").Error)
			}, false},
			{"ExecInsert", func(t *testing.T, tx *gorm.DB, _ grTicket) {
				dbtest.Must(t, tx.Exec("INSERT INTO gr_tickets (title) VALUES (?)", "exec").Error)
			}, false},
			{"UpdateInTransaction", func(t *testing.T, tx *gorm.DB, x grTicket) {
				dbtest.Must(t, tx.Model(&x).Update("Title", "in-tx").Error)
			}, true},
			{"ExecInsertInTransaction", func(t *testing.T, tx *gorm.DB, _ grTicket) {
				dbtest.Must(t, tx.Exec("INSERT INTO gr_tickets (title) VALUES (?)", "exec-tx").Error)
			}, true},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				x := grTicket{Title: "t"}
				dbtest.Must(t, db.Create(&x).Error)
				before := e.warm(t, graphTicketsProbe, graphTicketLogProbe, graphUnrelatedProbe, graphOrderTotalsProbe)
				if c.tx {
					dbtest.Must(t, db.Transaction(func(tx *gorm.DB) error {
						c.write(t, tx, x)
						return nil
					}))
				} else {
					c.write(t, db.DB, x)
				}
				e.fresh(t, graphTicketsProbe, before[graphTicketsProbe.name])
				e.fresh(t, graphTicketLogProbe, before[graphTicketLogProbe.name])
				e.missed(t, graphUnrelatedProbe, before[graphUnrelatedProbe.name])
				e.missed(t, graphOrderTotalsProbe, before[graphOrderTotalsProbe.name])
			})
		}
	})
}

// TestGraphOwnTriggersIgnored: gr_feed's only trigger is named dogpile_…
// (the plugin's own, as the PostgreSQL feed installs): a write to gr_feed
// is a write of gr_feed alone, and the other tables' reads stay hits.
func TestGraphOwnTriggersIgnored(t *testing.T) {
	graphEach(t, func(t *testing.T, db *dbtest.DB) {
		e := graphSetup(t, db, graphTriggerSchema(db.Dialect), graphTriggerOpts()...)
		graphTriggerSeed(t, db)
		for _, w := range []struct {
			name  string
			write func(t *testing.T)
		}{
			{"Create", func(t *testing.T) { dbtest.Must(t, db.Create(&grFeed{V: 2}).Error) }},
			{"ExecUpdate", func(t *testing.T) { dbtest.Must(t, db.Exec("UPDATE gr_feed SET v = v + 1").Error) }},
		} {
			t.Run(w.name, func(t *testing.T) {
				before := e.warm(t, graphFeedProbe, graphUnrelatedProbe, graphTicketLogProbe, graphOrderTotalsProbe)
				w.write(t)
				e.fresh(t, graphFeedProbe, before[graphFeedProbe.name])
				for _, p := range []graphProbe{graphUnrelatedProbe, graphTicketLogProbe, graphOrderTotalsProbe} {
					e.hit(t, p, before[p.name])
				}
			})
		}
	})
}
