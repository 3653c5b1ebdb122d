package crossproc

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/dogpile-go/dogpile"
	redisbackend "github.com/dogpile-go/dogpile/backends/redis"
	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

// The fault suite's machinery (issue 12): a writer process and a reader
// process over one PostgreSQL database and one redis-server of the test's
// own, while the parent injects a fault into Redis (or into the writer's
// route to it).
//
// The writer commits item 1 = 1, 2, 3, … through the plugin, rotating
// between write kinds (faultConf.Kinds): GORM updates, in a transaction or
// in GORM's own, and CALL set_item(v), a statement whose tables the plugin
// cannot see, which invalidates the whole region. After each Commit
// returned, it records the value in the progress table through a plain
// *sql.DB: the suite's record of what committed lives outside Redis, which
// is what is faulted.
//
// The reader reads progress the same uncached way, then item 1 through
// FromCache; the read is stale when it returns less than that progress:
// data older than a commit that had returned before the read began.
//
// Both children log every operation (start, end, values, error) and write
// the log to a file when the parent says "stop"; the parent splits the run
// into phases (warm-up without fault, fault, recovery…) by wall-clock
// marks and computes everything from the logs.

const envFault = "CROSSPROC_FAULT" // a fault child's faultConf, JSON

// Write kinds of the writer.
const (
	kindTxUpdate = "tx-update" // db.Transaction: Model(&Item{}).Update
	kindUpdate   = "update"    // Model(&Item{}).Update in GORM's default transaction
	kindCall     = "call"      // CALL set_item(v), autocommit: region-wide invalidation
	kindTxCall   = "tx-call"   // CALL set_item(v) in db.Transaction
)

var (
	allKinds  = []string{kindTxUpdate, kindCall, kindUpdate, kindTxCall}
	rowKinds  = []string{kindTxUpdate, kindUpdate}
	callKinds = []string{kindCall, kindTxCall}
)

// Timing of the suite.
const (
	// faultTimeout is the backend operation timeout of both children; the
	// latency target is 3× it (plus the warm-up maximum).
	faultTimeout = redisbackend.DefaultTimeout
	faultWarmup  = 800 * time.Millisecond
	faultPhase   = 2 * time.Second
	// faultSettle follows a fault that made the writer's invalidations
	// fail while the writer keeps committing: the backend's circuit breaker
	// may stay open for its cooldown, so the writer's next invalidation may
	// land that much later.
	faultSettle = redisbackend.DefaultBreakerCooldown + 500*time.Millisecond
	faultAfter  = 800 * time.Millisecond
	// faultRetryBound is how long after a fault ends invalidations kept by
	// the region must have landed by its background retry alone (its
	// backoff is capped at a few seconds, region/tags.go retry).
	faultRetryBound = 4 * time.Second
	commitGap       = 10 * time.Millisecond // writer: pause between commits
	readGap         = 2 * time.Millisecond  // reader: pause between reads
)

// faultConf configures a fault child.
type faultConf struct {
	Timeout time.Duration // backend operation timeout
	LockTTL time.Duration // 0: the backend's default
	Lease   time.Duration // 0: the region's default invalidation lease
	Skew    time.Duration // the region's clock runs this far behind time.Now
	Strict  bool          // writer: dogpile.WithStrictInvalidation
	Kinds   []string      // writer: the write kinds, in rotation
	Gap     time.Duration // pause between two operations
	Out     string        // where the child writes its log on "stop"
}

func (c faultConf) backendOpts() []redisbackend.Option {
	opts := []redisbackend.Option{redisbackend.WithTimeout(c.Timeout)}
	if c.LockTTL > 0 {
		opts = append(opts, redisbackend.WithLockTTL(c.LockTTL))
	}
	return opts
}

func (c faultConf) regionOpts() []region.Option {
	var opts []region.Option
	if c.Lease > 0 {
		opts = append(opts, region.WithInvalidationLease(c.Lease))
	}
	if skew := c.Skew; skew != 0 {
		opts = append(opts, region.WithClock(func() time.Time { return time.Now().Add(-skew) }))
	}
	return opts
}

func loadFaultConf(t *testing.T) faultConf {
	var c faultConf
	childMust(t, json.Unmarshal([]byte(os.Getenv(envFault)), &c))
	return c
}

// readRec is one read of the reader.
type readRec struct {
	S, E int64 // start and end of the cached read, Unix nanoseconds
	P    int64 // the progress read just before it
	V    int64 // the value it returned
	Hit  bool  // the region counted a hit during it
	R    int64 // nanoseconds it spent on Redis (redisClock)
	Err  string
}

// commitRec is one write of the writer.
type commitRec struct {
	V      int64 // the value written
	Kind   string
	S, E   int64 // start and return of the write (Commit), Unix nanoseconds
	Err    string
	Strict bool  // Err matches dogpile.ErrInvalidationFailed
	Before int64 // the last value committed before this write
	Row    int64 // after a failed write: item 1's value read back
	R      int64 // nanoseconds it spent on Redis (redisClock)
}

func init() {
	childRoles["fault-writer"] = childFaultWriter
	childRoles["fault-reader"] = childFaultReader
}

// openPlain opens the database at dsn as a plain *sql.DB: no GORM, no
// plugin, no cache.
func openPlain(t testing.TB, dsn string) *sql.DB {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// writeLog writes v as JSON to path.
func writeLog(t *testing.T, path string, v any) {
	b, err := json.Marshal(v)
	childMust(t, err)
	childMust(t, os.WriteFile(path, b, 0o644))
}

// faultWrite sets item 1 to v by a write of kind.
func faultWrite(db *gorm.DB, kind string, v int64) error {
	switch kind {
	case kindTxUpdate:
		return db.Transaction(func(tx *gorm.DB) error {
			return tx.Model(&Item{}).Where("id = ?", 1).Update("value", v).Error
		})
	case kindUpdate:
		return db.Model(&Item{}).Where("id = ?", 1).Update("value", v).Error
	case kindCall:
		return db.Exec("CALL set_item(?)", v).Error
	case kindTxCall:
		return db.Transaction(func(tx *gorm.DB) error { return tx.Exec("CALL set_item(?)", v).Error })
	}
	return fmt.Errorf("unknown write kind %q", kind)
}

// childFaultWriter commits increasing values to item 1 until "stop",
// recording each committed value in the progress table once Commit
// returned. "pause" stops committing (answered by "paused LAST"), "resume"
// resumes.
func childFaultWriter(t *testing.T) {
	conf := loadFaultConf(t)
	dsn := os.Getenv(envPG)
	db, _ := openPostgres(t, dsn)
	plain := openPlain(t, dsn)
	rc := childRedis(t)
	rc.AddHook(redisTimeHook{})
	be := newBackend(t, rc, os.Getenv(envPrefix), conf.backendOpts()...)
	r := sharedRegion(t, be, conf.regionOpts()...)
	var popts []dogpile.PluginOption
	if conf.Strict {
		popts = append(popts, dogpile.WithStrictInvalidation())
	}
	childMust(t, db.Use(dogpile.New(map[string]*region.Region{"default": r}, popts...)))
	say("ready")
	awaitLine(t, "go")
	cmds := stdinLines()
	var (
		log     []commitRec
		last    int64
		running = true
	)
	for i := int64(1); ; {
		var cmd string
		ok := true
		if running {
			select {
			case cmd, ok = <-cmds:
			default:
			}
		} else {
			cmd, ok = <-cmds
		}
		if !ok {
			childFail(t, "stdin closed")
		}
		switch cmd {
		case "":
		case "pause":
			running = false
			say("paused %d", last)
			continue
		case "resume":
			running = true
			continue
		case "stop":
			writeLog(t, conf.Out, log)
			say("done %d", len(log))
			return
		default:
			childFail(t, "unknown command %q", cmd)
		}
		kind := conf.Kinds[int(i)%len(conf.Kinds)]
		var clock redisClock
		rec := commitRec{V: i, Kind: kind, Before: last, S: time.Now().UnixNano()}
		err := faultWrite(db.WithContext(withRedisClock(context.Background(), &clock)), kind, i)
		rec.E, rec.R = time.Now().UnixNano(), clock.ns.Load()
		if err == nil {
			last = i
			if _, err := plain.Exec("UPDATE progress SET value = $1 WHERE id = 1", i); err != nil {
				childFail(t, "record progress %d: %v", i, err)
			}
		} else {
			rec.Err = err.Error()
			rec.Strict = errors.Is(err, dogpile.ErrInvalidationFailed)
			childMust(t, plain.QueryRow("SELECT value FROM items WHERE id = 1").Scan(&rec.Row))
		}
		log = append(log, rec)
		i++
		time.Sleep(conf.Gap)
	}
}

// childFaultReader reads item 1 through FromCache in a loop until "stop",
// reading the progress table (uncached) just before each read.
func childFaultReader(t *testing.T) {
	conf := loadFaultConf(t)
	dsn := os.Getenv(envPG)
	db, _ := openPostgres(t, dsn)
	plain := openPlain(t, dsn)
	rc := childRedis(t)
	rc.AddHook(redisTimeHook{})
	be := newBackend(t, rc, os.Getenv(envPrefix), conf.backendOpts()...)
	r := sharedRegion(t, be, conf.regionOpts()...)
	usePlugin(t, db, r)
	say("ready")
	awaitLine(t, "go")
	stop := make(chan struct{})
	go func() {
		for l := range stdinLines() {
			if l == "stop" {
				close(stop)
				return
			}
		}
	}()
	var log []readRec
	for {
		select {
		case <-stop:
			writeLog(t, conf.Out, log)
			say("done %d", len(log))
			return
		default:
		}
		var rec readRec
		childMust(t, plain.QueryRow("SELECT value FROM progress WHERE id = 1").Scan(&rec.P))
		hits := r.Stats().Hits
		var clock redisClock
		rec.S = time.Now().UnixNano()
		v, err := cachedValue(db.WithContext(withRedisClock(context.Background(), &clock)))
		rec.E, rec.R = time.Now().UnixNano(), clock.ns.Load()
		rec.V, rec.Hit = v, r.Stats().Hits > hits
		if err != nil {
			rec.Err = err.Error()
		}
		log = append(log, rec)
		time.Sleep(conf.Gap)
	}
}

// ---- the parent side ----

// faultRun is one run of the workload: its servers, children and phases.
type faultRun struct {
	t      *testing.T
	name   string
	srv    *testharness.RedisServer
	rc     *goredis.Client // the parent's client of srv
	prefix string          // the children's backend prefix (CROSSPROC_PREFIX)
	dsn    string
	plain  *sql.DB

	// Set before start.
	writerAddr   string // redis-server address of the writer (default srv.Addr)
	readerPrefix string // backend prefix of the reader (default prefix)
	writerConf   faultConf
	readerConf   faultConf

	writer, reader *child
	marks          []phaseMark
	parentDB       *gorm.DB       // the parent's own cached reads (parentRead)
	parentRegion   *region.Region // parentDB's region
}

type phaseMark struct {
	name string
	at   time.Time
}

// newFaultRun starts a redis-server of the test's own and creates a
// database with item 1 (value 0), the progress table and set_item.
func newFaultRun(t *testing.T, name string) *faultRun {
	t.Helper()
	srv := testharness.Redis(t)
	dsn := newPostgresDB(t, 0)
	plain := openPlain(t, dsn)
	for _, stmt := range []string{
		`CREATE TABLE progress (id int PRIMARY KEY, value bigint NOT NULL)`,
		`INSERT INTO progress VALUES (1, 0)`,
		`CREATE PROCEDURE set_item(v bigint) LANGUAGE sql AS $$ UPDATE items SET value = v WHERE id = 1 $$`,
	} {
		_, err := plain.Exec(stmt)
		must(t, err)
	}
	return &faultRun{
		t: t, name: name, srv: srv, rc: newRedisClient(t, srv.Addr), prefix: uniquePrefix(t), dsn: dsn, plain: plain,
		writerConf: faultConf{Timeout: faultTimeout, Kinds: allKinds, Gap: commitGap},
		readerConf: faultConf{Timeout: faultTimeout, Gap: readGap},
	}
}

// backendPrefix is what starts every Redis key of the children's regions.
func (run *faultRun) backendPrefix() string { return run.prefix + ":" }

// start starts the writer and the reader and lets them go: the "warmup"
// phase begins.
func (run *faultRun) start() {
	t := run.t
	t.Helper()
	dir := t.TempDir()
	run.writerConf.Out = filepath.Join(dir, "writer.json")
	run.readerConf.Out = filepath.Join(dir, "reader.json")
	env := func(addr, prefix string, conf faultConf) []string {
		b, err := json.Marshal(conf)
		must(t, err)
		return []string{envRedis + "=" + addr, envPG + "=" + run.dsn, envPrefix + "=" + prefix, envFault + "=" + string(b)}
	}
	waddr := run.writerAddr
	if waddr == "" {
		waddr = run.srv.Addr
	}
	rprefix := run.readerPrefix
	if rprefix == "" {
		rprefix = run.prefix
	}
	run.writer = startChild(t, "writer", "fault-writer", env(waddr, run.prefix, run.writerConf)...)
	run.reader = startChild(t, "reader", "fault-reader", env(run.srv.Addr, rprefix, run.readerConf)...)
	run.writer.expect("ready")
	run.reader.expect("ready")
	run.reader.send("go")
	run.writer.send("go")
	run.phase("warmup")
}

// phase begins the phase name now.
func (run *faultRun) phase(name string) {
	run.marks = append(run.marks, phaseMark{name, time.Now()})
}

// pauseWriter stops the writer's commits and returns the last value it
// committed.
func (run *faultRun) pauseWriter() int64 {
	run.t.Helper()
	run.writer.send("pause")
	v, err := strconv.ParseInt(run.writer.expect("paused"), 10, 64)
	must(run.t, err)
	return v
}

func (run *faultRun) resumeWriter() { run.writer.send("resume") }

// parentRead reads item 1 through FromCache from the parent, with a region
// of its own over the children's keys.
func (run *faultRun) parentRead() (int64, error) {
	if run.parentDB == nil {
		db, _ := openPostgres(run.t, run.dsn)
		be := newBackend(run.t, run.rc, run.prefix, redisbackend.WithTimeout(faultTimeout))
		run.parentRegion = sharedRegion(run.t, be)
		usePlugin(run.t, db, run.parentRegion)
		run.parentDB = db
	}
	return cachedValue(run.parentDB)
}

// primeEntry pauses the writer and reads through the parent until a read
// is a cache hit returning the last committed value: the shared entry of
// item 1 is then valid in Redis. A fault injected now finds a cached answer
// that the writer's next commits must invalidate (were the entry already
// invalid, every read would miss and none could be stale). The caller
// injects the fault and resumes the writer.
func (run *faultRun) primeEntry() {
	t := run.t
	t.Helper()
	last := run.pauseWriter()
	deadline := time.Now().Add(eventually)
	for {
		hits := int64(-1)
		if run.parentRegion != nil {
			hits = run.parentRegion.Stats().Hits
		}
		v, err := run.parentRead()
		if err == nil && v == last && hits >= 0 && run.parentRegion.Stats().Hits > hits {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("fault=%s: no cached read of the last committed value %d within %v (last: %d, %v)", run.name, last, eventually, v, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// finish stops both children, reads their logs and computes the figures.
func (run *faultRun) finish() *faultResult {
	t := run.t
	t.Helper()
	end := time.Now()
	run.writer.send("stop")
	run.reader.send("stop")
	run.writer.expect("done")
	run.reader.expect("done")
	run.writer.wait()
	run.reader.wait()
	res := &faultResult{name: run.name, strict: run.writerConf.Strict, timeout: faultTimeout}
	readJSON(t, run.writerConf.Out, &res.commits)
	readJSON(t, run.readerConf.Out, &res.reads)
	res.compute(run.marks, end)
	return res
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	must(t, json.Unmarshal(b, v))
}

// phaseStats are the figures of one phase, or of a whole run.
type phaseStats struct {
	name       string
	from, to   int64 // Unix nanoseconds
	reads      int   // successful reads
	hits       int   // of which cache hits
	readErrs   int
	commits    int // successful commits
	failed     int // commits refused with ErrInvalidationFailed (strict)
	writeErrs  int // other failed writes
	stale      int
	firstStale string
	// maxStaleness: for the stale reads, the longest time between the
	// return of the first commit newer than what the read returned and the
	// start of the read.
	maxStaleness time.Duration
	maxRead      time.Duration
	maxCommit    time.Duration
	slowestRead  string
	slowestWrite string
	// The longest time one read or one commit spent on Redis.
	maxReadRedis, maxCommitRedis   time.Duration
	redisiestRead, redisiestCommit string
}

func (s *phaseStats) line() string {
	return fmt.Sprintf("reads=%d commits=%d stale=%d maxStaleness=%v maxReadLatency=%v maxCommitLatency=%v",
		s.reads, s.commits, s.stale, s.maxStaleness, s.maxRead, s.maxCommit)
}

// faultResult is what a run measured.
type faultResult struct {
	name    string
	strict  bool
	timeout time.Duration
	reads   []readRec
	commits []commitRec

	phases []*phaseStats
	total  phaseStats
	// baseline: the operations that ended within the warm-up phase; late:
	// all the others. The latency bound applies to late's maxima.
	baseline, late phaseStats
	// rowChanged lists failed writes after which item 1 did not hold the
	// last committed value.
	rowChanged []string
	writeErrEx []string
	readErrEx  []string
}

func (res *faultResult) compute(marks []phaseMark, end time.Time) {
	for i, m := range marks {
		to := end.UnixNano()
		if i+1 < len(marks) {
			to = marks[i+1].at.UnixNano()
		}
		res.phases = append(res.phases, &phaseStats{name: m.name, from: m.at.UnixNano(), to: to})
	}
	res.total.name = "total"
	warmEnd := int64(-1 << 63)
	if len(res.phases) > 0 && res.phases[0].name == "warmup" {
		warmEnd = res.phases[0].to
	}
	phaseOf := func(ns int64) *phaseStats {
		p := res.phases[0]
		for _, q := range res.phases {
			if q.from <= ns {
				p = q
			}
		}
		return p
	}
	latOf := func(e int64) *phaseStats {
		if e < warmEnd {
			return &res.baseline
		}
		return &res.late
	}
	at := func(ns int64) string { return time.Unix(0, ns).Format("15:04:05.000") }

	var done []commitRec // successful commits, by value
	for _, c := range res.commits {
		d := time.Duration(c.E - c.S)
		ph := phaseOf(c.E) // a commit belongs to the phase it returned in
		for _, s := range []*phaseStats{ph, &res.total, latOf(c.E)} {
			switch {
			case c.Err == "":
				s.commits++
			case c.Strict && res.strict:
				s.failed++
			default:
				s.writeErrs++
			}
			if d > s.maxCommit {
				s.maxCommit = d
				s.slowestWrite = fmt.Sprintf("%s of %d begun at %s, returned in phase %s", c.Kind, c.V, at(c.S), ph.name)
			}
			if rd := time.Duration(c.R); rd > s.maxCommitRedis {
				s.maxCommitRedis = rd
				s.redisiestCommit = fmt.Sprintf("%s of %d begun at %s (%v in all), returned in phase %s", c.Kind, c.V, at(c.S), d, ph.name)
			}
		}
		if c.Err == "" {
			done = append(done, c)
			continue
		}
		if !(c.Strict && res.strict) && len(res.writeErrEx) < 5 {
			res.writeErrEx = append(res.writeErrEx, fmt.Sprintf("%s of %d at %s: %s", c.Kind, c.V, at(c.S), c.Err))
		}
		if c.Row != c.Before {
			res.rowChanged = append(res.rowChanged, fmt.Sprintf("%s of %d at %s failed (%s) but item 1 then held %d, not the last committed %d", c.Kind, c.V, at(c.S), c.Err, c.Row, c.Before))
		}
	}
	sort.Slice(done, func(i, j int) bool { return done[i].V < done[j].V })
	for _, r := range res.reads {
		d := time.Duration(r.E - r.S)
		ph := phaseOf(r.S) // a read belongs to the phase it began in
		var staleness time.Duration
		stale := r.Err == "" && r.V < r.P
		if stale {
			// The first commit newer than what the read returned.
			k := sort.Search(len(done), func(i int) bool { return done[i].V > r.V })
			if k < len(done) {
				staleness = max(time.Duration(r.S-done[k].E), 0)
			}
		}
		for _, s := range []*phaseStats{ph, &res.total, latOf(r.E)} {
			if r.Err != "" {
				s.readErrs++
			} else {
				s.reads++
				if r.Hit {
					s.hits++
				}
			}
			if stale {
				s.stale++
				if s.firstStale == "" {
					s.firstStale = fmt.Sprintf("read at %s returned %d after the commit of %d had returned (%v earlier)", at(r.S), r.V, r.P, staleness)
				}
				s.maxStaleness = max(s.maxStaleness, staleness)
			}
			if d > s.maxRead {
				s.maxRead = d
				s.slowestRead = fmt.Sprintf("read begun at %s in phase %s returned %d", at(r.S), ph.name, r.V)
			}
			if rd := time.Duration(r.R); rd > s.maxReadRedis {
				s.maxReadRedis = rd
				s.redisiestRead = fmt.Sprintf("read begun at %s in phase %s (%v in all) returned %d", at(r.S), ph.name, d, r.V)
			}
		}
		if r.Err != "" && len(res.readErrEx) < 5 {
			res.readErrEx = append(res.readErrEx, fmt.Sprintf("read at %s (%s): %s", at(r.S), ph.name, r.Err))
		}
	}
}

// phase returns the figures of the phase name.
func (res *faultResult) phase(t *testing.T, name string) *phaseStats {
	t.Helper()
	for _, p := range res.phases {
		if p.name == name {
			return p
		}
	}
	t.Fatalf("fault=%s: no phase %q", res.name, name)
	return nil
}

// log reports the run: the figures line of the fault, then one per phase.
func (res *faultResult) log(t *testing.T, extra string) {
	t.Helper()
	t.Logf("fault=%s %s failedCommits=%d readErrors=%d writeErrors=%d hits=%d baselineRead=%v baselineCommit=%v%s",
		res.name, res.total.line(), res.total.failed, res.total.readErrs, res.total.writeErrs, res.total.hits,
		res.baseline.maxRead, res.baseline.maxCommit, extra)
	for _, p := range res.phases {
		t.Logf("  phase=%s (from %s, %v) %s failedCommits=%d hits=%d", p.name, time.Unix(0, p.from).Format("15:04:05.000"),
			time.Duration(p.to-p.from).Round(time.Millisecond), p.line(), p.failed, p.hits)
	}
}

// checkWorkload fails the test when the run proves nothing: no reads or
// commits in the warm-up, or no cache hit at all (stale detection would
// be vacuous); or when a caller got an error it should not have (a cache
// fault never fails a read, nor a write without WithStrictInvalidation),
// or when a failed write changed the row.
func (res *faultResult) checkWorkload(t *testing.T) {
	t.Helper()
	if w := res.phases[0]; w.reads == 0 || w.commits == 0 {
		t.Errorf("fault=%s: the %s phase had %d reads and %d commits: the workload did not run", res.name, w.name, w.reads, w.commits)
	}
	if res.total.hits == 0 {
		t.Errorf("fault=%s: no read was a cache hit: stale reads could not be detected", res.name)
	}
	if n := res.total.readErrs; n > 0 {
		t.Errorf("fault=%s: %d reads failed, e.g. %q", res.name, n, res.readErrEx)
	}
	if n := res.total.writeErrs; n > 0 {
		t.Errorf("fault=%s: %d writes failed, e.g. %q", res.name, n, res.writeErrEx)
	}
	for _, s := range res.rowChanged {
		t.Errorf("fault=%s: %s", res.name, s)
	}
}

// checkNoStale fails the test for each of the phases (all when none is
// named) that had a stale read.
func (res *faultResult) checkNoStale(t *testing.T, phases ...string) {
	t.Helper()
	for _, p := range res.phases {
		if len(phases) > 0 && !slices.Contains(phases, p.name) {
			continue
		}
		if p.stale > 0 {
			t.Errorf("fault=%s phase=%s: %d of %d reads were stale (maxStaleness %v), first: %s", res.name, p.name, p.stale, p.reads, p.maxStaleness, p.firstStale)
		}
	}
}

// checkLatency checks the README's bound on the operations that did not end
// in the warm-up: none spent more than 3× the backend timeout on Redis
// (redisClock: the time of the commands it made or waited for), plus
// readExtra for a read (the lock TTL of the lock fault, during which a
// read waits for a holder that died). Their wall-clock time is also
// logged against 3× the timeout plus the longest the same operation took
// in the warm-up (the database's own cost), but asserted only against a
// bound three times as generous in the database's cost: on a loaded
// machine one commit to PostgreSQL can take longer than every commit of
// the short warm-up did, which says nothing about the cache.
func (res *faultResult) checkLatency(t *testing.T, readExtra time.Duration) {
	t.Helper()
	readRedis, commitRedis := readExtra+3*res.timeout, 3*res.timeout
	readBound := readExtra + 3*res.timeout + res.baseline.maxRead
	commitBound := 3*res.timeout + res.baseline.maxCommit
	t.Logf("fault=%s on Redis: maxRead=%v maxCommit=%v (bounds %v and %v); in all: maxReadLatency=%v (%v = %v + 3×%v + warm-up %v) maxCommitLatency=%v (%v = 3×%v + warm-up %v)",
		res.name, res.late.maxReadRedis, res.late.maxCommitRedis, readRedis, commitRedis,
		res.late.maxRead, readBound, readExtra, res.timeout, res.baseline.maxRead,
		res.late.maxCommit, commitBound, res.timeout, res.baseline.maxCommit)
	if res.late.maxReadRedis > readRedis {
		t.Errorf("fault=%s: a read spent %v on Redis, more than %v (%v + 3× the backend timeout %v): %s",
			res.name, res.late.maxReadRedis, readRedis, readExtra, res.timeout, res.late.redisiestRead)
	}
	if res.late.maxCommitRedis > commitRedis {
		t.Errorf("fault=%s: a commit spent %v on Redis, more than 3× the backend timeout %v: %s",
			res.name, res.late.maxCommitRedis, res.timeout, res.late.redisiestCommit)
	}
	if hang := readBound + 2*res.baseline.maxRead; res.late.maxRead > hang {
		t.Errorf("fault=%s: a read took %v, more than %v (%v + 3× the backend timeout %v + 3× the warm-up maximum %v): %s",
			res.name, res.late.maxRead, hang, readExtra, res.timeout, res.baseline.maxRead, res.late.slowestRead)
	}
	if hang := commitBound + 2*res.baseline.maxCommit; res.late.maxCommit > hang {
		t.Errorf("fault=%s: a commit took %v, more than %v (3× the backend timeout %v + 3× the warm-up maximum %v): %s",
			res.name, res.late.maxCommit, hang, res.timeout, res.baseline.maxCommit, res.late.slowestWrite)
	}
}

// ---- Redis helpers of the parent ----

// scanKeys returns every key that starts with prefix.
func scanKeys(ctx context.Context, rc *goredis.Client, prefix string) ([]string, error) {
	pattern := globEscaper.Replace(prefix) + "*"
	var keys []string
	var cursor uint64
	for {
		page, next, err := rc.Scan(ctx, cursor, pattern, 1000).Result()
		if err != nil {
			return keys, err
		}
		keys = append(keys, page...)
		if next == 0 {
			return keys, nil
		}
		cursor = next
	}
}

var globEscaper = strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`, `]`, `\]`)

// Kinds of a region's Redis keys, told apart in a way that does not depend
// on the region's record layout: a lock key starts, after the backend
// prefix, with '{' (backends/redis/keys.go lockSuffix); an entry key holds
// ":k:"; every other key is part of the invalidation machinery (tag
// counters, pending markers, the region-wide record).
const (
	keyEntry  = "entry"
	keyLock   = "lock"
	keyRecord = "record"
)

func keyKind(backendPrefix, key string) string {
	rest := strings.TrimPrefix(key, backendPrefix)
	switch {
	case strings.HasPrefix(rest, "{"):
		return keyLock
	case strings.Contains(rest, ":k:"):
		return keyEntry
	}
	return keyRecord
}

// keysOf returns the keys under backendPrefix of kind.
func keysOf(ctx context.Context, rc *goredis.Client, backendPrefix, kind string) ([]string, error) {
	all, err := scanKeys(ctx, rc, backendPrefix)
	var keys []string
	for _, k := range all {
		if keyKind(backendPrefix, k) == kind {
			keys = append(keys, k)
		}
	}
	return keys, err
}

// infoField returns a numeric field of INFO section.
func infoField(t *testing.T, rc *goredis.Client, section, field string) int64 {
	t.Helper()
	info, err := rc.Info(context.Background(), section).Result()
	must(t, err)
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			must(t, err)
			return n
		}
	}
	t.Fatalf("INFO %s has no %s", section, field)
	return 0
}

// goUntilStopped runs fn in a goroutine until the returned stop is called;
// stop waits for it to return.
func goUntilStopped(fn func(stop <-chan struct{})) (stop func()) {
	ch := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { fn(ch) })
	var once sync.Once
	return func() {
		once.Do(func() { close(ch) })
		wg.Wait()
	}
}

// tickUntil calls fn every d until stop is closed.
func tickUntil(stop <-chan struct{}, d time.Duration, fn func()) {
	tick := time.NewTicker(d)
	defer tick.Stop()
	for {
		fn()
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}

// sleepUntil sleeps until at.
func sleepUntil(at time.Time) { time.Sleep(time.Until(at)) }
