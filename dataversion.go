package dogpile

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"
)

// Commits to a SQLite file the plugin does not see: another process (or
// another *sql.DB of this one) writing the same file. SQLite's
// PRAGMA data_version, read twice on the same connection, differs when any
// other connection committed in between. The plugin keeps one read-only
// connection of its own to the file and reads it there, on the read path,
// at most once per interval; a change makes every entry a miss, since
// data_version says that something committed, not what.

// WithDataVersionCheck makes the plugin notice commits that other
// processes (or other connection pools of this one) make to the SQLite
// database file, which no GORM statement of this plugin announces: another
// instance of the application, a script, the sqlite3 shell.
//
// The plugin opens its own read-only connection to the database's file
// (with the driver of the application's pool; one connection, kept for the
// plugin's lifetime and closed when the plugin is garbage-collected; no
// connection of the application's pool is held) and reads PRAGMA
// data_version on it at most once per every: the first query through the
// plugin's query callback (a FromCache or RelationshipCache read, or any
// other) that finds every elapsed since the last check runs it. When the
// value changed, every entry of every region of the plugin becomes a miss
// (region.EveryValue, as Region.Invalidate(ctx, true) makes them), before
// that query is answered.
//
// Bound: a cached read that begins more than 2×every after another
// connection's commit is answered from data that includes it. While reads
// arrive steadily, one reader claims a check each interval and the others
// do not wait for it, so entries are fresh within every plus one check's
// duration; a reader waits for a check another runs only when the last
// completed check is older than 2×every (the first reads after a pause).
//
// Cost: a clock read and two atomic loads on each query through the
// callback (tens of nanoseconds); once per interval, one PRAGMA on the
// plugin's connection (microseconds), run by the query that claims it; and
// after a change, the misses that refill the regions. SQLite cannot tell
// this process's commits from another's: the application's own writes
// change data_version too, so a process that writes through the plugin
// also wipes its regions, at most once per interval, although the plugin
// already invalidated what those writes changed; the wipe of a region
// shared through Redis reaches every process that shares it. The check
// suits databases read far more often than they are written.
//
// A check that fails (SQLITE_BUSY while a writer holds a rollback
// journal's lock, since the plugin's connection does not wait; an I/O
// error) counts as a change. A wipe a region's backend cannot take is
// retried by the region, which bypasses its entries meanwhile. Only the
// main database is watched, not ATTACHed ones. An in-memory database
// (":memory:", mode=memory, a temporary database) has no file another
// process could write: nothing is checked.
//
// every = 0 (the default) turns the check off. db.Use returns an error
// matching ErrInvalidConfig for a negative every, or for a database that
// is not SQLite.
func WithDataVersionCheck(every time.Duration) PluginOption {
	return func(c *pluginConfig) { c.dataVersionEvery = every }
}

// dataVersionWatch reads PRAGMA data_version on the plugin's own
// connection to the database file. Times are nanoseconds since epoch
// (monotonic).
//
// Checks are serialised by mu, and a check starts only when every has
// elapsed since the previous one started (claimed): so at most one per
// interval. Outside mu, done == claimed (a check stores both); inside a
// check, claimed is its start and done the start of the previous one. A
// reader returns without waiting while done is at most 2×every old: every
// commit before done was seen, and wiped, before done was stored.
type dataVersionWatch struct {
	every int64 // the interval, in nanoseconds
	epoch time.Time
	file  string  // the database file, as PRAGMA database_list names it
	db    *sql.DB // the plugin's handle: one read-only connection to file

	claimed atomic.Int64 // the start of the latest check
	done    atomic.Int64 // the start of the latest completed check

	mu      sync.Mutex // held while a check runs
	conn    *sql.Conn  // guarded by mu; nil: open one at the next check
	version int64      // guarded by mu: data_version last read on conn
	known   bool       // guarded by mu: version was read on conn

	stats dataVersionStats
}

// dataVersionStats counts what the data_version check did; nothing it
// meets is dropped silently. Read them with snapshot.
type dataVersionStats struct {
	checks     atomic.Int64 // checks run (PRAGMA data_version sent, or tried)
	changes    atomic.Int64 // checks that found a change, or could not tell (errors, a new connection)
	wipes      atomic.Int64 // changes whose wipe every region accepted
	errors     atomic.Int64 // checks that could not read data_version
	wipeErrors atomic.Int64 // wipes a region failed (it bypasses and retries; region.Stats)
	waits      atomic.Int64 // reads that waited for another reader's check (the last was older than 2×every)
	lastErr    atomic.Pointer[error]
}

// dataVersionCounts is a snapshot of dataVersionStats.
type dataVersionCounts struct {
	Checks, Changes, Wipes, Errors, WipeErrors, Waits int64
	LastErr                                           error
}

// snapshot returns the counters; all zero for a nil watch (the check off).
func (w *dataVersionWatch) snapshot() dataVersionCounts {
	if w == nil {
		return dataVersionCounts{}
	}
	s := &w.stats
	c := dataVersionCounts{
		Checks: s.checks.Load(), Changes: s.changes.Load(), Wipes: s.wipes.Load(),
		Errors: s.errors.Load(), WipeErrors: s.wipeErrors.Load(), Waits: s.waits.Load(),
	}
	if e := s.lastErr.Load(); e != nil {
		c.LastErr = *e
	}
	return c
}

// initDataVersion opens the watch WithDataVersionCheck asked for: it finds
// the main database's file through the application's pool (PRAGMA
// database_list, one statement, the connection given back at once), opens
// the plugin's read-only connection to it and reads the first value.
func (p *Plugin) initDataVersion(db *gorm.DB) error {
	every := p.config.dataVersionEvery
	if every == 0 {
		return nil
	}
	if err := checkDataVersionConfig(every, p.dialect); err != nil {
		return err
	}
	ctx := background(db.Statement.Context)
	file, err := mainFile(ctx, p.rawPool)
	if err != nil {
		return fmt.Errorf("dogpile: WithDataVersionCheck: %w", err)
	}
	if file == "" {
		return nil // in memory: no other process can write it
	}
	w, err := openDataVersionWatch(ctx, p.rawPool, file, every)
	if err != nil {
		return fmt.Errorf("dogpile: WithDataVersionCheck: %w", err)
	}
	p.dv = w
	// The plugin has no Close: its connection goes with it.
	runtime.AddCleanup(p, func(w *dataVersionWatch) { w.close() }, w)
	return nil
}

// checkDataVersionConfig returns what is wrong with WithDataVersionCheck
// (every) on a database of dialect; Initialize asks it before it changes
// anything of the database's.
func checkDataVersionConfig(every time.Duration, dialect string) error {
	switch {
	case every == 0:
		return nil
	case every < 0:
		return fmt.Errorf("%w: WithDataVersionCheck(%v): the interval must be positive (0 turns the check off)", ErrInvalidConfig, every)
	case dialect != "sqlite":
		return fmt.Errorf("%w: WithDataVersionCheck is for SQLite, and the database is %q", ErrInvalidConfig, dialect)
	}
	return nil
}

// mainFile returns the file of the main database ("" for one in memory).
func mainFile(ctx context.Context, pool gorm.ConnPool) (string, error) {
	rows, err := pool.QueryContext(ctx, "PRAGMA database_list")
	if err != nil {
		return "", fmt.Errorf("PRAGMA database_list: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var seq int64
		var name, file sql.NullString
		if err := rows.Scan(&seq, &name, &file); err != nil {
			return "", fmt.Errorf("PRAGMA database_list: %w", err)
		}
		if name.String == "main" {
			return file.String, rows.Close()
		}
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("PRAGMA database_list: %w", err)
	}
	return "", errors.New("PRAGMA database_list names no main database")
}

// uriPath escapes a file name for a SQLite URI filename.
var uriPath = strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23")

// openDataVersionWatch opens the watch's handle to file, read-only, with
// the driver of the application's pool when it can be found (its
// registered name otherwise: "sqlite3").
func openDataVersionWatch(ctx context.Context, pool gorm.ConnPool, file string, every time.Duration) (*dataVersionWatch, error) {
	dsn := "file:" + uriPath.Replace(file) + "?mode=ro"
	var handle *sql.DB
	if c, ok := pool.(gorm.GetDBConnector); ok {
		if sqlDB, err := c.GetDBConn(); err == nil && sqlDB != nil {
			handle = sql.OpenDB(connectorFor(sqlDB.Driver(), dsn))
		}
	}
	if handle == nil {
		var err error
		if handle, err = sql.Open("sqlite3", dsn); err != nil {
			return nil, fmt.Errorf("open %s read-only: %w", file, err)
		}
	}
	handle.SetMaxOpenConns(1)
	handle.SetMaxIdleConns(1)
	w := &dataVersionWatch{every: int64(every), epoch: time.Now(), file: file, db: handle}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := w.read(ctx); err != nil {
		w.close()
		return nil, fmt.Errorf("open %s read-only: %w", file, err)
	}
	return w, nil
}

// connectorFor returns a connector opening dsn with drv.
func connectorFor(drv driver.Driver, dsn string) driver.Connector {
	if dc, ok := drv.(driver.DriverContext); ok {
		if c, err := dc.OpenConnector(dsn); err == nil {
			return c
		}
	}
	return dsnConnector{drv: drv, dsn: dsn}
}

// dsnConnector is a driver.Connector for a driver that has none.
type dsnConnector struct {
	drv driver.Driver
	dsn string
}

func (c dsnConnector) Connect(context.Context) (driver.Conn, error) { return c.drv.Open(c.dsn) }
func (c dsnConnector) Driver() driver.Driver                        { return c.drv }

// close releases the watch's connection.
func (w *dataVersionWatch) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.conn != nil {
		_ = w.conn.Close()
		w.conn = nil
	}
	_ = w.db.Close()
}

// now returns the time since epoch.
func (w *dataVersionWatch) now() int64 { return int64(time.Since(w.epoch)) }

// checkDataVersion runs on the read path, before a cached read is served:
// when WithDataVersionCheck is on and its interval elapsed, the reader
// checks data_version (at most one reader per interval) and, when it
// changed, makes every entry a miss before its own read goes on.
func (p *Plugin) checkDataVersion(ctx context.Context) {
	if w := p.dv; w != nil {
		w.check(ctx, p)
	}
}

// check is checkDataVersion for w.
func (w *dataVersionWatch) check(ctx context.Context, p *Plugin) {
	now := w.now()
	if now-w.claimed.Load() < w.every {
		// Checked within the interval (or checking now): serve, unless
		// the latest completed check is too old for the bound.
		if now-w.done.Load() <= 2*w.every {
			return
		}
	} else if w.mu.TryLock() {
		w.runLocked(ctx, p)
		w.mu.Unlock()
		return
	} else if now-w.done.Load() <= 2*w.every {
		return // another reader is checking, and the last check is recent
	}
	// The last completed check is older than the bound: wait for the one
	// running, or run one.
	w.stats.waits.Add(1)
	w.mu.Lock()
	w.runLocked(ctx, p)
	w.mu.Unlock()
}

// runLocked runs one check, unless one started within the interval (while
// this reader waited for mu). Called with mu held.
func (w *dataVersionWatch) runLocked(ctx context.Context, p *Plugin) {
	start := w.now()
	if start-w.claimed.Load() < w.every {
		return
	}
	w.claimed.Store(start)
	w.stats.checks.Add(1)
	ctx = background(ctx) // a reader's cancellation is no database error
	changed, err := w.read(ctx)
	if err != nil {
		p.logf(ctx, slog.LevelWarn, LogMsgDataVersionFailed, slog.Any("error", err))
		w.stats.errors.Add(1)
		w.stats.lastErr.Store(&err)
	}
	if changed {
		w.stats.changes.Add(1)
		if err := p.invalidateEverything(ctx, ""); err != nil {
			w.stats.wipeErrors.Add(1)
			err = fmt.Errorf("dogpile: data_version changed; making every entry a miss: %w", err)
			p.logf(ctx, slog.LevelError, LogMsgDataVersionWipe, slog.Any("error", err))
			w.stats.lastErr.Store(&err)
		} else {
			w.stats.wipes.Add(1)
		}
	}
	w.done.Store(start)
}

// read reads data_version on the watch's connection, opening one if it has
// none, and reports whether it changed since the last read. A value read on
// a new connection cannot be compared with the old one's, and a failed read
// tells nothing: both count as changed. Called with mu held.
func (w *dataVersionWatch) read(ctx context.Context) (changed bool, err error) {
	if w.conn == nil {
		c, err := w.db.Conn(ctx)
		if err != nil {
			return true, fmt.Errorf("dogpile: data_version: connect to %s: %w", w.file, err)
		}
		// Never wait on a writer's lock: a check that cannot read counts
		// as a change, and the reader that runs it must not stall.
		if _, err := c.ExecContext(ctx, "PRAGMA busy_timeout = 0"); err != nil {
			_ = c.Close()
			return true, fmt.Errorf("dogpile: data_version: PRAGMA busy_timeout on %s: %w", w.file, err)
		}
		w.conn, w.known = c, false
	}
	var v int64
	if err := w.conn.QueryRowContext(ctx, "PRAGMA data_version").Scan(&v); err != nil {
		if errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) {
			_ = w.conn.Close()
			w.conn = nil
		}
		return true, fmt.Errorf("dogpile: PRAGMA data_version on %s: %w", w.file, err)
	}
	changed = !w.known || v != w.version
	w.version, w.known = v, true
	return changed, nil
}
