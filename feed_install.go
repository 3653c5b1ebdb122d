package dogpile

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
	"gorm.io/gorm"
)

// The PostgreSQL invalidation feed, database side: a statement-level
// trigger on each table sends a notification on PostgresFeedChannel when a
// statement writes the table, naming the table and the writing transaction.
// PostgreSQL delivers notifications when (and only if) the transaction
// commits, once per distinct payload: a transaction that writes a table a
// thousand times sends one notification for it. ListenPostgres
// (feed_listen.go) receives them and invalidates the tables in the plugin's
// regions, whoever wrote them: psql, another service, a cron job, a writer
// that died between its commit and its own invalidation.

// PostgresFeedChannel is the channel the feed's triggers notify on. Each
// payload is "<transaction id>:<table>": the id as pg_current_xact_id()
// (txid_current() before PostgreSQL 13) renders it, then the table's bare
// name (TG_TABLE_NAME: no schema, no quotes).
const PostgresFeedChannel = "dogpile_invalidate"

// PostgresFeedFunction is the name of the trigger function
// InstallPostgresTriggers creates, in the current schema
// (current_schema()). Dropping it with CASCADE removes the feed's triggers
// too: DROP FUNCTION dogpile_feed_notify() CASCADE.
const PostgresFeedFunction = "dogpile_feed_notify"

// PostgresFeedTrigger is the name of the trigger InstallPostgresTriggers
// creates on each table. The plugin's schema graph does not count
// triggers named dogpile_… as the table's own triggers.
const PostgresFeedTrigger = "dogpile_feed"

// ErrNotPostgres is matched by the error of InstallPostgresTriggers and
// ListenPostgres when the database is not PostgreSQL.
var ErrNotPostgres = errors.New("dogpile: the invalidation feed needs PostgreSQL")

// feedTriggerType is pg_trigger.tgtype of the feed's triggers: AFTER (no
// BEFORE or INSTEAD bit), FOR EACH STATEMENT (no ROW bit), INSERT (4),
// DELETE (8), UPDATE (16) and TRUNCATE (32).
const feedTriggerType = 4 | 8 | 16 | 32

// feedInstallLock is the advisory lock key that serialises concurrent
// installs (two processes starting at once), which would otherwise fail on
// "tuple concurrently updated" when both replace the function.
const feedInstallLock = 0x646f6770696c65 // "dogpile"

// InstallPostgresTriggers installs the database side of the invalidation
// feed, idempotently, as a migration would: running it again (after a new
// table was created, or at every start) changes only what is missing. It
// creates or replaces the trigger function PostgresFeedFunction in the
// current schema and, on each of tables, a trigger PostgresFeedTrigger that
// runs AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE, once per statement,
// and calls pg_notify on PostgresFeedChannel with the table and the
// transaction id. A table that already has the trigger keeps it (no lock is
// taken on it beyond the catalog read); one whose dogpile_feed trigger is
// not the feed's is given the feed's.
//
// tables are names as SQL writes them (users, public.users, "Users"); with
// none, every ordinary and partitioned table of the current schema gets the
// trigger (partitions too, for statements that name a partition; tables
// that belong to an extension are left out). Each must be an ordinary or
// partitioned table: a view's writes reach the tables under it, whose
// triggers fire. Tables created later need another call.
//
// Everything runs in one transaction through db, so a failure installs
// nothing; the user needs to own the tables (or have the TRIGGER privilege)
// and may create functions in the current schema. The statements are DDL:
// when the plugin is registered on db, they invalidate every region.
// Errors are wrapped; a database other than PostgreSQL returns an error
// matching ErrNotPostgres.
//
// The triggers only send notifications; ListenPostgres receives them. Each
// transaction that writes a table with the trigger takes PostgreSQL's
// notification queue lock at commit, which serialises the commits of such
// transactions across the server: measure before installing it on tables
// written by many concurrent sessions. PostgreSQL keeps each notification
// until every session listening on the channel has read it: a listener that
// stops reading with its connection still open (a paused process) makes
// the queue grow, and once it is full (8 GB by default) commits that notify
// fail; pg_notification_queue_usage() tells how full it is.
func InstallPostgresTriggers(ctx context.Context, db *gorm.DB, tables ...string) error {
	if db == nil || db.Dialector == nil {
		return fmt.Errorf("%w: no database", ErrNotPostgres)
	}
	if name := db.Dialector.Name(); name != "postgres" {
		return fmt.Errorf("%w: the database's dialect is %q", ErrNotPostgres, name)
	}
	err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		return installFeed(tx, tables)
	})
	if err != nil {
		return fmt.Errorf("dogpile: install the PostgreSQL feed triggers: %w", err)
	}
	return nil
}

// feedTable is a table to put the trigger on.
type feedTable struct {
	OID     uint32 `gorm:"column:oid"`
	Name    string `gorm:"column:name"` // regclass text: schema-qualified and quoted as needed
	Relkind string `gorm:"column:relkind"`
}

// installFeed runs the install in tx.
func installFeed(tx *gorm.DB, tables []string) error {
	if err := tx.Exec("SELECT pg_advisory_xact_lock(?)", int64(feedInstallLock)).Error; err != nil {
		return fmt.Errorf("take the install lock: %w", err)
	}
	var info struct {
		Version int     `gorm:"column:version"`
		Schema  *string `gorm:"column:schema"`
	}
	if err := tx.Raw("SELECT current_setting('server_version_num')::int AS version, current_schema() AS schema").Scan(&info).Error; err != nil {
		return fmt.Errorf("read the server version and current schema: %w", err)
	}
	if info.Schema == nil {
		return errors.New("no current schema (search_path names no existing schema): the trigger function has nowhere to go")
	}
	xid := "pg_current_xact_id()::text"
	execute := "FUNCTION"
	if info.Version < 130000 {
		xid = "txid_current()::text"
	}
	if info.Version < 110000 {
		execute = "PROCEDURE"
	}
	fn := pgx.Identifier{*info.Schema, PostgresFeedFunction}.Sanitize()
	src := "\nBEGIN\n" +
		"\tPERFORM pg_notify('" + PostgresFeedChannel + "', " + xid + " || ':' || TG_TABLE_NAME);\n" +
		"\tRETURN NULL;\n" +
		"END\n"
	// Replacing the function is DDL, which makes every entry of the
	// plugin's regions a miss: an application that installs at every
	// start replaces it only when this version's differs.
	var have0 []string
	if err := tx.Raw("SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure(?)", fn+"()").Scan(&have0).Error; err != nil {
		return fmt.Errorf("read function %s: %w", fn, err)
	}
	if len(have0) != 1 || have0[0] != src {
		body := "CREATE OR REPLACE FUNCTION " + fn + "() RETURNS trigger LANGUAGE plpgsql AS $dogpile$" + src + "$dogpile$"
		if err := tx.Exec(body).Error; err != nil {
			return fmt.Errorf("create function %s: %w", fn, err)
		}
	}

	var targets []feedTable
	if len(tables) == 0 {
		err := tx.Raw(`SELECT c.oid, c.oid::regclass::text AS name, c.relkind::text AS relkind
FROM pg_class c
WHERE c.relnamespace = (SELECT n.oid FROM pg_namespace n WHERE n.nspname = current_schema())
  AND c.relkind IN ('r', 'p')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 2`).Scan(&targets).Error
		if err != nil {
			return fmt.Errorf("list the tables of the current schema: %w", err)
		}
	}
	for _, name := range tables {
		var found []feedTable
		err := tx.Raw("SELECT c.oid, c.oid::regclass::text AS name, c.relkind::text AS relkind FROM pg_class c WHERE c.oid = to_regclass(?)", name).Scan(&found).Error
		if err != nil {
			return fmt.Errorf("look up table %q: %w", name, err)
		}
		if len(found) == 0 {
			return fmt.Errorf("table %q does not exist", name)
		}
		if k := found[0].Relkind; k != "r" && k != "p" {
			return fmt.Errorf("%q is not a table (relkind %q): the feed's triggers go on ordinary and partitioned tables", name, k)
		}
		if !slices.ContainsFunc(targets, func(t feedTable) bool { return t.OID == found[0].OID }) {
			targets = append(targets, found[0])
		}
	}

	// The tables that already have the feed's trigger, as this version
	// creates it.
	var have []uint32
	err := tx.Raw(`SELECT t.tgrelid FROM pg_trigger t
WHERE t.tgname = ? AND t.tgfoid = to_regprocedure(?) AND t.tgtype = ?`,
		PostgresFeedTrigger, fn+"()", feedTriggerType).Scan(&have).Error
	if err != nil {
		return fmt.Errorf("list the installed triggers: %w", err)
	}
	trigger := pgx.Identifier{PostgresFeedTrigger}.Sanitize()
	for _, t := range targets {
		if slices.Contains(have, t.OID) {
			continue
		}
		// t.Name is regclass output: already quoted and qualified as
		// needed.
		if err := tx.Exec("DROP TRIGGER IF EXISTS " + trigger + " ON " + t.Name).Error; err != nil {
			return fmt.Errorf("drop trigger %s on %s: %w", PostgresFeedTrigger, t.Name, err)
		}
		create := "CREATE TRIGGER " + trigger + " AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON " + t.Name +
			" FOR EACH STATEMENT EXECUTE " + execute + " " + fn + "()"
		if err := tx.Exec(create).Error; err != nil {
			return fmt.Errorf("create trigger %s on %s: %w", PostgresFeedTrigger, t.Name, err)
		}
	}
	return nil
}
