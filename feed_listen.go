package dogpile

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"

	"github.com/dogpile-go/dogpile/region"
)

// The PostgreSQL invalidation feed, application side: a Listener LISTENs
// on PostgresFeedChannel (the triggers of feed_install.go notify on it) and
// invalidates, in every region of the plugin, the tables each committed
// transaction wrote (invalidateExternal, external.go).
//
// Shared regions (a backend other processes reach: Redis) are invalidated
// once per transaction however many processes listen: each listener claims
// the pair (region, transaction) with an atomic set-if-absent on the
// region's backend; the one that claims it invalidates and then marks the
// claim done; the others read the claim until it is done, and invalidate
// themselves when it is not done within feedClaimWait (its claimer died or
// lost the backend). Process-local regions (memory, null) are invalidated
// by every listener: each process has its own.
//
// Notifications sent while the connection is down are lost: once listening
// again, the listener makes every entry of every region a miss
// (invalidateEverything), listening first so that no write falls between.

// Tuning of the feed (not options: the bounds stated in ListenPostgres's
// documentation follow from them).
const (
	// feedBackoffMin and feedBackoffMax bound the wait between two attempts
	// to connect again (exponential, with jitter).
	feedBackoffMin = 50 * time.Millisecond
	feedBackoffMax = 2 * time.Second
	// feedConnectTimeout bounds one attempt to connect again and LISTEN.
	feedConnectTimeout = 10 * time.Second
	// feedKeepAlive is how long the connection may stay silent before the
	// listener checks it with a ping, which must answer within
	// feedPingTimeout: a connection that died silently (a network
	// partition) is noticed within their sum.
	feedKeepAlive   = 10 * time.Second
	feedPingTimeout = 5 * time.Second
	// feedClaimWait is how long a listener that did not claim a transaction
	// waits for its claimer's done mark before invalidating itself;
	// feedClaimPoll is its first look, each next one twice as late.
	feedClaimWait = 500 * time.Millisecond
	feedClaimPoll = 5 * time.Millisecond
	// feedClaimTTL is how long claims live in the backend: a listener that
	// gets a notification later than that after another claimed it
	// invalidates once more.
	feedClaimTTL = 30 * time.Second
)

// Claim values: claimed (being invalidated), done (invalidated).
var (
	feedClaimed = []byte("c")
	feedDone    = []byte("d")
)

// Listener receives the PostgreSQL invalidation feed for the plugin of one
// *gorm.DB (see ListenPostgres). Its methods are safe for concurrent use.
type Listener struct {
	p      *Plugin
	src    feedSource
	dbName string // the database, part of the claim keys
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once // Close

	checks claimChecks

	notifications, malformed, transactions, applies   atomic.Uint64
	deduplicated, takenOver, claimErrors, applyErrors atomic.Uint64
	disconnects, connectErrors, reconnects            atomic.Uint64
	connected                                         atomic.Bool
	lastErr                                           atomic.Pointer[error]
	pid                                               atomic.Uint32 // backend of the listening connection; 0: none

	hooks atomic.Pointer[feedHooks] // tests only
}

// feedHooks lets tests stop a listener at chosen points; nil fields do
// nothing.
type feedHooks struct {
	beforeReconnect func(ctx context.Context) // after a drop, before the next attempt
	afterRelisten   func(ctx context.Context) // listening again, before invalidating everything
	beforeClaim     func(ctx context.Context) // before claiming a transaction in a shared region
	afterClaim      func(ctx context.Context) // once claimed, before invalidating
}

func (l *Listener) hook(ctx context.Context, pick func(*feedHooks) func(context.Context)) {
	if h := l.hooks.Load(); h != nil {
		if fn := pick(h); fn != nil {
			fn(ctx)
		}
	}
}

// ListenerStats is a snapshot of what a Listener did since it started.
type ListenerStats struct {
	// Notifications is the number of notifications received on
	// PostgresFeedChannel.
	Notifications uint64
	// Malformed is the number of notifications whose payload is not the
	// feed's ("<transaction id>:<table>"), sent by something other than
	// its triggers; they are ignored.
	Malformed uint64
	// Transactions is the number of committed transactions the
	// notifications reported (the notifications of one transaction that
	// arrive together count once).
	Transactions uint64
	// Applies is the number of invalidations this listener made: one per
	// region for each batch of transactions it applied there (a shared
	// region's batch holds only the transactions this listener claimed).
	Applies uint64
	// Deduplicated is the number of (shared region, transaction) pairs
	// that another listener claimed and invalidated, so this one did not.
	Deduplicated uint64
	// TakenOver is the number of (shared region, transaction) pairs that
	// another listener claimed but did not mark done within the claim wait
	// (it died, or lost the backend), or whose claim vanished: this
	// listener invalidated them itself.
	TakenOver uint64
	// ClaimErrors is the number of claims, claim reads and done marks that
	// the backend failed; a transaction whose claim failed is invalidated
	// without deduplication.
	ClaimErrors uint64
	// ApplyErrors is the number of invalidations (Applies, and the
	// invalidation of everything after a reconnect) that failed to reach
	// a region's backend. The region keeps them, bypasses their tags in
	// this process and retries them until they land.
	ApplyErrors uint64
	// Disconnects is the number of times the listening connection was
	// lost: an error while waiting, or no answer to a keep-alive ping.
	Disconnects uint64
	// ConnectErrors is the number of attempts to connect again (and
	// LISTEN) that failed; the listener keeps trying.
	ConnectErrors uint64
	// Reconnects is the number of times the listener was listening again
	// after a disconnect, and made every entry of every region a miss, for
	// the notifications it may have missed.
	Reconnects uint64
	// Connected reports whether the listener is listening now.
	Connected bool
	// LastError is the last error the listener met (connection, claim or
	// invalidation), or nil.
	LastError error
}

// Stats returns a snapshot of the listener's counters.
func (l *Listener) Stats() ListenerStats {
	s := ListenerStats{
		Notifications: l.notifications.Load(),
		Malformed:     l.malformed.Load(),
		Transactions:  l.transactions.Load(),
		Applies:       l.applies.Load(),
		Deduplicated:  l.deduplicated.Load(),
		TakenOver:     l.takenOver.Load(),
		ClaimErrors:   l.claimErrors.Load(),
		ApplyErrors:   l.applyErrors.Load(),
		Disconnects:   l.disconnects.Load(),
		ConnectErrors: l.connectErrors.Load(),
		Reconnects:    l.reconnects.Load(),
		Connected:     l.connected.Load(),
	}
	if e := l.lastErr.Load(); e != nil {
		s.LastError = *e
	}
	return s
}

func (l *Listener) setErr(err error) {
	if err != nil {
		l.p.logf(context.Background(), slog.LevelWarn, LogMsgFeedError, slog.Any("error", err))
		l.lastErr.Store(&err)
	}
}

// ListenPostgres starts receiving the PostgreSQL invalidation feed (see
// InstallPostgresTriggers) for the plugin registered on db: every
// transaction committed to a table with the feed's trigger, by any client,
// invalidates that table (and what the plugin's schema graph says changes
// with it) in every region of the plugin, shortly after its commit. It
// complements the plugin's own invalidation of the writes made through
// GORM, which the feed invalidates once more (shared regions once per
// transaction across listeners, see below), and covers what that cannot
// see: writes by other clients, and writers that died or lost the cache
// between their commit and their own invalidation.
//
// The listener holds one connection, LISTENing on PostgresFeedChannel:
// opened from the DSN when db was opened with gorm.io/driver/postgres from a
// DSN, else taken from db's pool (which must be pgx's database/sql driver,
// github.com/jackc/pgx/v5/stdlib) for the listener's life, and closed
// rather than returned to it. ctx bounds only that first connection: when it
// fails, ListenPostgres returns the error. Afterwards a goroutine owned by
// the Listener receives the notifications until Close.
//
// Guarantees, for a transaction committed while the listener runs:
//
//   - Its tables are invalidated in every region once its notification
//     arrives (usually within a few milliseconds of the commit; the tests
//     measure it).
//   - A shared region (Redis) is invalidated by one listener however many
//     processes listen: they claim each (region, transaction) in the
//     backend. The claimer dying (or losing the backend) before it marks
//     the claim done delays the others' invalidation by at most 500 ms
//     after they received the notification.
//   - If the connection is lost, the listener connects again by itself,
//     waiting 50 ms to 2 s between attempts (exponential, with jitter), and
//     once LISTENing again makes every entry of every region a miss, since
//     notifications sent meanwhile are lost. A connection that dies
//     silently is noticed by a keep-alive ping within 15 s.
//   - A region that cannot be written keeps the invalidation and retries it
//     (region.Region.InvalidateTags), bypassing its tags in this process
//     meanwhile; the listener counts the error (Stats).
//
// Until the next notification or reconnect, entries filled from data older
// than a commit may be served between the commit and its notification, as
// for any invalidation made after a commit. Writes the triggers do not see
// (tables without them, logical replication, which disables ordinary
// triggers) are not covered.
//
// It returns ErrNotRegistered when the plugin is not registered on db, and
// an error matching ErrNotPostgres for a database other than PostgreSQL.
func ListenPostgres(ctx context.Context, db *gorm.DB) (*Listener, error) {
	p, err := pluginOf(db)
	if err != nil {
		return nil, err
	}
	if p.dialect != "postgres" {
		return nil, fmt.Errorf("%w: the database's dialect is %q", ErrNotPostgres, p.dialect)
	}
	src, err := feedSourceOf(db)
	if err != nil {
		return nil, fmt.Errorf("dogpile: ListenPostgres: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	l := &Listener{p: p, src: src, cancel: cancel}
	l.checks.wake = make(chan struct{}, 1)
	first := make(chan error, 1)
	l.wg.Add(1)
	go l.run(runCtx, ctx, first)
	if err := <-first; err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("dogpile: ListenPostgres: %w", err)
	}
	l.wg.Add(1)
	go l.checkClaims(runCtx)
	return l, nil
}

// Close stops the listener: it ends its goroutines, waits for them, and
// closes its connection. Notifications not yet applied are dropped (a
// claim this listener held is taken over by the others after the claim
// wait). Close may be called more than once, and concurrently; it returns
// nil.
func (l *Listener) Close() error {
	l.once.Do(func() {
		l.cancel()
		l.wg.Wait()
	})
	return nil
}

// ---- connections ----

// feedSource opens the listening connection.
type feedSource interface {
	// session connects (connecting bounded by ctx), runs fn on the
	// connection, and closes it when fn returns; it returns fn's error,
	// or a connectError when it could not connect.
	session(ctx context.Context, fn func(*pgx.Conn) error) error
}

// connectError is an error before the connection was listening.
type connectError struct{ err error }

func (e *connectError) Error() string { return "connect: " + e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// feedSourceOf picks how to connect: the DSN of a gorm.io/driver/postgres
// dialector opened from one, else a connection of db's pool.
func feedSourceOf(db *gorm.DB) (feedSource, error) {
	var cfg *postgres.Config
	switch d := db.Dialector.(type) {
	case *postgres.Dialector:
		cfg = d.Config
	case postgres.Dialector:
		cfg = d.Config
	}
	if cfg != nil && cfg.DSN != "" && cfg.Conn == nil {
		pc, err := pgx.ParseConfig(cfg.DSN)
		if err != nil {
			return nil, fmt.Errorf("parse the dialector's DSN: %w", err)
		}
		return &dsnSource{cfg: pc}, nil
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, fmt.Errorf("the database's *sql.DB: %w", err)
	}
	return &poolSource{db: sqlDB}, nil
}

// dsnSource connects with its own configuration.
type dsnSource struct{ cfg *pgx.ConnConfig }

func (s *dsnSource) session(ctx context.Context, fn func(*pgx.Conn) error) error {
	c, err := pgx.ConnectConfig(ctx, s.cfg)
	if err != nil {
		return &connectError{err}
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = c.Close(cctx)
	}()
	return fn(c)
}

// poolSource takes a connection of a database/sql pool of pgx's driver,
// and closes it afterwards: it LISTENed, it never goes back to the pool.
type poolSource struct{ db *sql.DB }

func (s *poolSource) session(ctx context.Context, fn func(*pgx.Conn) error) error {
	sc, err := s.db.Conn(ctx)
	if err != nil {
		return &connectError{err}
	}
	defer sc.Close()
	var fnErr error
	_ = sc.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			fnErr = &connectError{fmt.Errorf("the pool's driver connection is a %T, not pgx's (github.com/jackc/pgx/v5/stdlib)", dc)}
			return nil
		}
		fnErr = fn(c.Conn())
		return driver.ErrBadConn // closes it instead of returning it to the pool
	})
	return fnErr
}

// ---- the listening goroutine ----

// run connects, listens until the connection drops, and connects again,
// until ctx ends. The first attempt is bounded by firstCtx and reports on
// first (nil once listening); when it fails, run returns.
func (l *Listener) run(ctx, firstCtx context.Context, first chan<- error) {
	defer l.wg.Done()
	listenSQL := "LISTEN " + pgx.Identifier{PostgresFeedChannel}.Sanitize()
	delay := feedBackoffMin
	for attempt := 0; ; attempt++ {
		connectCtx, cancel := firstCtx, context.CancelFunc(func() {})
		if attempt > 0 {
			connectCtx, cancel = context.WithTimeout(ctx, feedConnectTimeout)
		}
		var began time.Time
		err := l.src.session(connectCtx, func(c *pgx.Conn) error {
			if _, err := c.Exec(connectCtx, listenSQL); err != nil {
				return &connectError{fmt.Errorf("%s: %w", listenSQL, err)}
			}
			began = time.Now()
			if attempt == 0 {
				l.dbName = c.Config().Database
			}
			l.pid.Store(c.PgConn().PID())
			l.connected.Store(true)
			defer func() {
				l.connected.Store(false)
				l.pid.Store(0)
			}()
			if attempt > 0 {
				// Listening again: what was committed since the last
				// notification received may have been missed. In this
				// order: a commit from now on is notified, one before is
				// invalidated here.
				l.hook(ctx, func(h *feedHooks) func(context.Context) { return h.afterRelisten })
				if err := l.p.invalidateEverything(ctx, ""); err != nil {
					l.applyErrors.Add(1)
					l.setErr(fmt.Errorf("invalidate everything after reconnecting: %w", err))
				}
				l.reconnects.Add(1)
			} else {
				first <- nil
			}
			return l.listen(ctx, c)
		})
		cancel()
		if attempt == 0 && began.IsZero() {
			if err == nil {
				err = errors.New("connection closed before LISTEN")
			}
			first <- err
			return
		}
		if ctx.Err() != nil {
			return
		}
		if began.IsZero() {
			l.connectErrors.Add(1)
		} else {
			l.disconnects.Add(1)
			if time.Since(began) >= feedBackoffMax {
				delay = feedBackoffMin // a connection that lasted: start over
			}
		}
		if err == nil {
			err = errors.New("connection closed")
		}
		l.setErr(fmt.Errorf("feed connection: %w", err))
		l.hook(ctx, func(h *feedHooks) func(context.Context) { return h.beforeReconnect })
		wait := delay/2 + rand.N(delay/2+1)
		delay = min(2*delay, feedBackoffMax)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// listen receives notifications on c until ctx ends (nil) or the
// connection fails (its error).
func (l *Listener) listen(ctx context.Context, c *pgx.Conn) error {
	netConn := c.PgConn().Conn()
	for {
		// Deadlines on the socket rather than on a context: a timeout
		// leaves the connection usable whatever the configured context
		// watcher does on cancellation.
		_ = netConn.SetReadDeadline(time.Now().Add(feedKeepAlive))
		n, err := c.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !pgconn.Timeout(err) || c.IsClosed() {
				return fmt.Errorf("wait for notification: %w", err)
			}
			_ = netConn.SetDeadline(time.Now().Add(feedPingTimeout))
			err := c.Ping(ctx)
			_ = netConn.SetDeadline(time.Time{})
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("keep-alive ping: %w", err)
			}
			continue
		}
		var b feedBatch
		l.add(&b, n)
		// What has already arrived goes in the same batch: the
		// notifications of one commit come together. A deadline in the
		// past returns what is buffered without waiting.
		_ = netConn.SetReadDeadline(time.Now())
		var drainErr error
		for {
			n, err := c.WaitForNotification(context.Background())
			if err != nil {
				if !pgconn.Timeout(err) || c.IsClosed() {
					drainErr = fmt.Errorf("wait for notification: %w", err)
				}
				break
			}
			l.add(&b, n)
		}
		_ = netConn.SetReadDeadline(time.Time{})
		l.applyBatch(ctx, b.txs)
		if drainErr != nil {
			return drainErr
		}
	}
}

// ---- applying ----

// feedTx is one committed transaction's notifications.
type feedTx struct {
	id     string
	tables []string // normTable, sorted, each once
}

// feedBatch groups the notifications received together by transaction.
type feedBatch struct{ txs []feedTx }

// add parses a notification into b.
func (l *Listener) add(b *feedBatch, n *pgconn.Notification) {
	if n == nil || n.Channel != PostgresFeedChannel {
		return
	}
	l.notifications.Add(1)
	id, table, ok := strings.Cut(n.Payload, ":")
	table = normTable(table)
	if !ok || id == "" || strings.Trim(id, "0123456789") != "" || table == "" {
		l.malformed.Add(1)
		return
	}
	i := slices.IndexFunc(b.txs, func(t feedTx) bool { return t.id == id })
	if i < 0 {
		b.txs = append(b.txs, feedTx{id: id})
		i = len(b.txs) - 1
	}
	tx := &b.txs[i]
	if j, found := slices.BinarySearch(tx.tables, table); !found {
		tx.tables = slices.Insert(tx.tables, j, table)
	}
}

// tablesOf returns the tables of txs, each once.
func tablesOf(txs []feedTx) []string {
	var all []string
	for _, tx := range txs {
		all = append(all, tx.tables...)
	}
	slices.Sort(all)
	return slices.Compact(all)
}

// isProcessLocal reports whether only this process reaches r's backend.
func isProcessLocal(r *region.Region) bool {
	l, ok := r.Backend().(region.ProcessLocal)
	return ok && l.ProcessLocal()
}

// invalidate invalidates tables in the region registered under name ("":
// all), counting it as n applies.
func (l *Listener) invalidate(ctx context.Context, name string, n int, tables []string) error {
	l.applies.Add(uint64(n))
	err := l.p.invalidateExternal(ctx, name, tables...)
	if err != nil {
		l.applyErrors.Add(1)
		l.setErr(fmt.Errorf("invalidate %v: %w", tables, err))
	}
	return err
}

// applyBatch invalidates the tables of txs: in the process-local regions
// at once, in the shared ones for the transactions this listener claims;
// the others' claims are checked later (checkClaims).
func (l *Listener) applyBatch(ctx context.Context, txs []feedTx) {
	if len(txs) == 0 {
		return
	}
	l.transactions.Add(uint64(len(txs)))
	p := l.p
	var local, shared []int
	for i, r := range p.regionList {
		if isProcessLocal(r) {
			local = append(local, i)
		} else {
			shared = append(shared, i)
		}
	}
	all := tablesOf(txs)
	if len(shared) == 0 {
		_ = l.invalidate(ctx, "", len(local), all)
		return
	}
	for _, i := range local {
		_ = l.invalidate(ctx, p.regionNames[i], 1, all)
	}
	for _, i := range shared {
		l.applyShared(ctx, i, txs)
	}
}

// applyShared claims each of txs in the i-th region and invalidates the
// claimed ones there, then marks them done.
func (l *Listener) applyShared(ctx context.Context, i int, txs []feedTx) {
	r, name := l.p.regionList[i], l.p.regionNames[i]
	be := r.Backend()
	var mine []feedTx
	var done []region.Item
claims:
	for k, tx := range txs {
		key := l.claimKey(r, tx)
		l.hook(ctx, func(h *feedHooks) func(context.Context) { return h.beforeClaim })
		ok, err := be.SetIf(ctx, region.Item{Key: key, Value: feedClaimed, TTL: feedClaimTTL}, []region.Guard{{Key: key}})
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			l.claimErrors.Add(1)
			l.setErr(fmt.Errorf("claim transaction %s in region %q: %w", tx.id, name, err))
			// No deduplication without the backend, and no more claims in
			// this batch: each would wait for the backend's timeout.
			mine = append(mine, txs[k:]...)
			break claims
		case ok:
			l.hook(ctx, func(h *feedHooks) func(context.Context) { return h.afterClaim })
			if ctx.Err() != nil {
				return
			}
			mine = append(mine, tx)
			done = append(done, region.Item{Key: key, Value: feedDone, TTL: feedClaimTTL})
		default:
			l.checks.add(claimCheck{region: i, key: key, tx: tx, step: feedClaimPoll, next: time.Now().Add(feedClaimPoll), deadline: time.Now().Add(feedClaimWait)})
		}
	}
	if len(mine) == 0 {
		return
	}
	if err := l.invalidate(ctx, name, 1, tablesOf(mine)); err != nil || len(done) == 0 {
		return // not done: the others take over after the claim wait
	}
	if err := be.SetMulti(ctx, done); err != nil {
		l.claimErrors.Add(1)
		l.setErr(fmt.Errorf("mark transactions done in region %q: %w", name, err))
	}
}

// claimKey is the backend key of the claim of tx in r: in the region's
// part of the keyspace, named after the transaction and a hash of the
// database and the tables, so that listeners that grouped a transaction's
// notifications differently, or transactions of two databases with one id,
// never share a claim unless they invalidate the same tables.
func (l *Listener) claimKey(r *region.Region, tx feedTx) string {
	h := fnv.New64a()
	h.Write([]byte(l.dbName))
	for _, t := range tx.tables {
		h.Write([]byte{0})
		h.Write([]byte(t))
	}
	name := strings.NewReplacer("%", "%25", ":", "%3A").Replace(r.Name())
	return fmt.Sprintf("%s:feed:%s:%016x", name, tx.id, h.Sum64())
}

// ---- others' claims ----

// claimCheck is a transaction another listener claimed in a shared region,
// to check until its claim is done or the deadline passes.
type claimCheck struct {
	region         int
	key            string
	tx             feedTx
	step           time.Duration
	next, deadline time.Time
}

// claimChecks is the queue of claimCheck, read by checkClaims.
type claimChecks struct {
	mu   sync.Mutex
	list []claimCheck  // guarded by mu
	wake chan struct{} // 1-buffered: a check was added
}

func (q *claimChecks) add(c claimCheck) {
	q.mu.Lock()
	q.list = append(q.list, c)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// due removes and returns the checks due at now, and the time of the next
// one (zero: none).
func (q *claimChecks) due(now time.Time) (due []claimCheck, next time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	kept := q.list[:0]
	for _, c := range q.list {
		if !c.next.After(now) {
			due = append(due, c)
			continue
		}
		kept = append(kept, c)
		if next.IsZero() || c.next.Before(next) {
			next = c.next
		}
	}
	clear(q.list[len(kept):])
	q.list = kept
	return due, next
}

// checkClaims reads the claims other listeners hold, until ctx ends: a
// done claim was invalidated by its claimer; one still claimed at its
// deadline, or gone, is invalidated here.
func (l *Listener) checkClaims(ctx context.Context) {
	defer l.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		due, next := l.checks.due(time.Now())
		if len(due) > 0 {
			l.check(ctx, due)
			continue
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = time.Until(next)
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-l.checks.wake:
		case <-t.C:
		}
	}
}

// check reads the claims of due, one read per region, and invalidates
// those this listener takes over.
func (l *Listener) check(ctx context.Context, due []claimCheck) {
	byRegion := make(map[int][]claimCheck)
	for _, c := range due {
		byRegion[c.region] = append(byRegion[c.region], c)
	}
	for i, cs := range byRegion {
		r, name := l.p.regionList[i], l.p.regionNames[i]
		keys := make([]string, len(cs))
		for j, c := range cs {
			keys[j] = c.key
		}
		vals, err := r.Backend().GetMulti(ctx, keys)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			l.claimErrors.Add(1)
			l.setErr(fmt.Errorf("read claims in region %q: %w", name, err))
		}
		now := time.Now()
		var mine []feedTx
		for j, c := range cs {
			switch {
			case err != nil:
				mine = append(mine, c.tx)
			case string(vals[j]) == string(feedDone):
				l.deduplicated.Add(1)
			case vals[j] == nil || !now.Before(c.deadline):
				l.takenOver.Add(1)
				mine = append(mine, c.tx)
			default:
				c.step *= 2
				c.next = now.Add(c.step)
				if c.next.After(c.deadline) {
					c.next = c.deadline
				}
				l.checks.add(c)
			}
		}
		if len(mine) > 0 {
			_ = l.invalidate(ctx, name, 1, tablesOf(mine))
		}
	}
}
