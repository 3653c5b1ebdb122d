package crossproc

// WithDataVersionCheck across processes: a child writes the SQLite file
// with plain database/sql (no GORM, no plugin, no cache), and the parent's
// FromCache reads of the row it has cached must be fresh within the bound
// the option states (2×every after the commit). The parent reads without
// pause, records when each read began and what it returned, and compares
// with the commit times the child reports (both processes read the same
// system clock). With the check off the same reads stay stale: the test can
// fail.

import (
	"database/sql"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/region"
)

const (
	dvEvery  = 5 * time.Millisecond
	dvBound  = 2 * dvEvery // what WithDataVersionCheck's godoc states
	dvTrials = 50
	// dvGiveUp bounds the wait for a fresh read: far beyond the bound, so
	// that only a check that never sees the commit fails on it.
	dvGiveUp  = 10 * time.Second
	envDVMode = "CROSSPROC_DV_JOURNAL" // the child's journal mode
)

func init() { childRoles["dv-writer"] = childDVWriter }

// dvParams are the DSN parameters of both processes for a journal mode.
func dvParams(mode string) string {
	return "_journal_mode=" + mode + "&_busy_timeout=10000"
}

// childDVWriter updates item 1 to the value each "write N" line names, with
// plain database/sql, and reports "wrote N <unix ns> <ns>": when Exec
// returned (the commit is visible by then) and how long it took. It ends
// at "quit".
func childDVWriter(t *testing.T) {
	db, err := sql.Open("sqlite3", "file:"+os.Getenv(envSQLite)+"?"+dvParams(os.Getenv(envDVMode)))
	childMust(t, err)
	defer db.Close()
	childMust(t, db.Ping())
	say("ready")
	for line := range stdinLines() {
		if line == "quit" {
			return
		}
		n, ok := strings.CutPrefix(line, "write ")
		if !ok {
			childFail(t, "unknown command %q", line)
		}
		v, err := strconv.ParseInt(n, 10, 64)
		childMust(t, err)
		t0 := time.Now()
		_, err = db.Exec("UPDATE items SET value = ? WHERE id = 1", v)
		childMust(t, err)
		t1 := time.Now()
		say("wrote %d %d %d", v, t1.UnixNano(), t1.Sub(t0).Nanoseconds())
	}
}

// dvParent opens the file at path with the plugin over a memory region
// (WithDataVersionCheck(every); 0: off).
func dvParent(t *testing.T, path, mode string, every time.Duration) *gorm.DB {
	t.Helper()
	sqlDB, err := sql.Open("sqlite3", "file:"+path+"?"+dvParams(mode))
	must(t, err)
	t.Cleanup(func() { _ = sqlDB.Close() })
	db, err := gorm.Open(sqlite.New(sqlite.Config{Conn: sqlDB}), &gorm.Config{Logger: logger.Discard})
	must(t, err)
	r := region.New(memory.New(), region.WithExpiration(time.Hour))
	t.Cleanup(func() { _ = r.Close() })
	must(t, db.Use(dogpile.New(map[string]*region.Region{"default": r}, dogpile.WithDataVersionCheck(every))))
	return db
}

// dvRead is one cached read: when it began and what it returned.
type dvRead struct {
	at    int64 // unix ns
	value int64
}

// dvTrial has the child write value and reads item 1 through the cache
// without pause until the read began at least until is after the commit
// (or, when fresh is set, until a fresh read was seen too, at most
// dvGiveUp). It returns the commit time (when the child's Exec returned),
// how long the Exec took, and the reads.
func dvTrial(t *testing.T, db *gorm.DB, c *child, value int64, until time.Duration, fresh bool) (commit int64, exec time.Duration, reads []dvRead) {
	t.Helper()
	c.send(fmt.Sprintf("write %d", value))
	reads = make([]dvRead, 0, 4096)
	seen := false
	for {
		at := time.Now().UnixNano()
		v, err := cachedValue(db)
		must(t, err)
		reads = append(reads, dvRead{at, v})
		seen = seen || v == value
		if commit == 0 {
			select {
			case m := <-c.msgs:
				var got int64
				if _, err := fmt.Sscanf(m, "wrote %d %d %d", &got, &commit, &exec); err != nil || got != value {
					t.Fatalf("child: %q; want wrote %d", m, value)
				}
			default:
			}
			continue
		}
		if at-commit >= int64(until) && (seen || !fresh) {
			return commit, exec, reads
		}
		if fresh && at-commit > int64(dvGiveUp) {
			t.Fatalf("value %d committed %v ago is still not read from the cache", value, time.Duration(at-commit))
		}
	}
}

// dvStale counts the reads that began at least bound after commit and did
// not return value. It returns too when the last stale read (ok: there is
// one) and the first read of the run of fresh reads at the end began,
// relative to the commit.
func dvStale(reads []dvRead, commit, value int64, bound time.Duration) (stale int, lastStale time.Duration, ok bool, firstFresh time.Duration) {
	for i := len(reads) - 1; i >= 0; i-- {
		if reads[i].value != value {
			lastStale, ok = time.Duration(reads[i].at-commit), true
			break
		}
		firstFresh = time.Duration(reads[i].at - commit)
	}
	for _, r := range reads {
		if r.at-commit >= int64(bound) && r.value != value {
			stale++
		}
	}
	return stale, lastStale, ok, firstFresh
}

// dvPct returns the q-quantile of sorted ds (nearest rank).
func dvPct(ds []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(ds)))) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

// dvQuantiles formats p50/p98/max of ds, which it sorts.
func dvQuantiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	slices.Sort(ds)
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
	return fmt.Sprintf("p50 %v p98 %v max %v", r(dvPct(ds, .5)), r(dvPct(ds, .98)), r(ds[len(ds)-1]))
}

func dvStartWriter(t *testing.T, path, mode string) *child {
	t.Helper()
	c := startChild(t, "dv-writer", "dv-writer", envSQLite+"="+path, envDVMode+"="+mode)
	c.expect("ready")
	t.Cleanup(func() { c.send("quit"); c.wait() })
	return c
}

// dvFile creates the test's database file in journal mode with item 1
// (Value 1).
func dvFile(t *testing.T, mode string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dv.db")
	db := dvParent(t, path, mode, 0)
	must(t, db.AutoMigrate(&Item{}))
	must(t, db.Create(&Item{ID: 1, Name: "one", Value: 1}).Error)
	return path
}

// With the check on, no read that begins 2×every after another process's
// commit returns the old value, over dvTrials commits, under a WAL and
// under a rollback journal (where the plugin's check may find the writer's
// lock: a failed check, counted as a change). Freshness latencies, from the
// commit to the first read of the fresh run, are logged.
func TestDataVersionCrossProcess(t *testing.T) {
	for _, mode := range []string{"WAL", "DELETE"} {
		t.Run(mode, func(t *testing.T) {
			path := dvFile(t, mode)
			db := dvParent(t, path, mode, dvEvery)
			c := dvStartWriter(t, path, mode)
			if v, err := cachedValue(db); err != nil || v != 1 {
				t.Fatalf("first read: %d, %v", v, err)
			}
			var lastStale, firstFresh, execs []time.Duration
			stale, reads := 0, 0
			for i := range dvTrials {
				value := int64(i + 2)
				commit, exec, rs := dvTrial(t, db, c, value, 2*dvBound, true)
				s, ls, ok, ff := dvStale(rs, commit, value, dvBound)
				stale += s
				reads += len(rs)
				if ok {
					lastStale = append(lastStale, ls)
				}
				firstFresh, execs = append(firstFresh, ff), append(execs, exec)
			}
			// Times are from the end of the child's Exec: a negative one is
			// a read that began after the commit but before Exec returned.
			t.Logf("%s, every %v, bound %v: %d commits, %d reads, %d stale reads begun after the bound", mode, dvEvery, dvBound, dvTrials, reads, stale)
			t.Logf("  last stale read began after the commit: %s (%d trials had one)", dvQuantiles(lastStale), len(lastStale))
			t.Logf("  first read of the fresh run began:      %s", dvQuantiles(firstFresh))
			t.Logf("  the child's UPDATE took:                %s", dvQuantiles(execs))
			if stale != 0 {
				t.Errorf("%d reads began more than %v after a commit and returned the old value; want 0", stale, dvBound)
			}
		})
	}
}

// With the check off, the same reads stay stale: the row cached before the
// child's commit is served long after it.
func TestDataVersionCrossProcessOff(t *testing.T) {
	const mode = "WAL"
	path := dvFile(t, mode)
	db := dvParent(t, path, mode, 0)
	c := dvStartWriter(t, path, mode)
	if v, err := cachedValue(db); err != nil || v != 1 {
		t.Fatalf("first read: %d, %v", v, err)
	}
	stale, reads := 0, 0
	for i := range 5 {
		value := int64(i + 2)
		commit, _, rs := dvTrial(t, db, c, value, 5*dvBound, false)
		s, _, _, _ := dvStale(rs, commit, value, dvBound)
		stale += s
		reads += len(rs)
	}
	t.Logf("check off: %d reads, %d of them stale after %v", reads, stale, dvBound)
	if stale == 0 {
		t.Errorf("with the check off no read was stale after the bound: the test cannot tell the check from its absence")
	}
}
