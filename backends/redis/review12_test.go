package redisbackend

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dogpile-go/dogpile/region"
)

// Review of issue 12: a caller that joins an in-process flight while the
// backend has lost the state its view would be compared with (the
// region-wide record, or a tag counter) must not be handed a value that
// was made before an invalidation it began after.

// joinerScenario runs: a leading caller's creator reads source (1) and
// blocks; another process commits (source becomes 2) and invalidates
// (invalidate); Redis then loses the keys lose selects; a caller that
// begins after the invalidation returned joins the flight. It returns what
// that caller was served.
func joinerScenario(t *testing.T, name string, opts []region.CallOption,
	invalidate func(w *region.Region) error, lose func(k string) bool) int64 {
	t.Helper()
	b, raw := shared(t)
	r := region.New(b, region.WithName(name), region.WithExpiration(time.Hour))
	writer := region.New(b, region.WithName(name), region.WithExpiration(time.Hour)) // another process
	t.Cleanup(func() { _ = r.Close(); _ = writer.Close() })

	// The record and the tag counters exist: a value was made before.
	if _, err := region.GetOrCreate(bg, r, "warm", func(context.Context) (int64, error) { return 0, nil }, opts...); err != nil {
		t.Fatal(err)
	}

	var source atomic.Int64
	source.Store(1)
	started, release := make(chan struct{}), make(chan struct{})
	var runs atomic.Int64
	create := func(context.Context) (int64, error) {
		v := source.Load()
		if runs.Add(1) == 1 {
			close(started)
			<-release
		}
		return v, nil
	}
	leader := make(chan int64, 1)
	go func() {
		v, err := region.GetOrCreate(bg, r, "k", create, opts...)
		if err != nil {
			t.Error(err)
		}
		leader <- v
	}()
	<-started

	// The commit: the source changes, then the invalidation returns.
	source.Store(2)
	if err := invalidate(writer); err != nil {
		t.Fatal(err)
	}
	// Redis loses some of the region's state (eviction, a FLUSH of a
	// replica promoted, an operator's DEL).
	var lost []string
	for _, k := range stateKeys(t, b, raw) {
		if lose(strings.TrimPrefix(k, b.Key(""))) {
			lost = append(lost, k)
		}
	}
	if len(lost) == 0 {
		t.Fatal("found no state key to lose")
	}
	if err := raw.Del(bg, lost...).Err(); err != nil {
		t.Fatal(err)
	}

	// A read that begins after the commit returned, in the process whose
	// creator is still running.
	joiner := make(chan int64, 1)
	go func() {
		v, err := region.GetOrCreate(bg, r, "k", create, opts...)
		if err != nil {
			t.Error(err)
		}
		joiner <- v
	}()
	waitFor(t, "the second caller to join the flight", func() bool { return r.Stats().LockWaits > 0 })
	close(release)
	<-leader
	var v int64
	within(t, "the joiner", func() { v = <-joiner })
	t.Logf("lost %v; joiner served %d", lost, v)
	return v
}

// TestReview12JoinerLostRecordServedOldValue: a hard invalidation, then
// the region-wide record lost; the joiner's view has no hard generation to
// compare, so flight.currentFor skips the comparison and hands it the
// value made before the invalidation.
func TestReview12JoinerLostRecordServedOldValue(t *testing.T) {
	v := joinerScenario(t, "joinrec", nil,
		func(w *region.Region) error { return w.Invalidate(bg, true) },
		func(k string) bool { return strings.Contains(k, ":H:") })
	if v != 2 {
		t.Fatalf("a read that began after a hard invalidation returned was served %d, made before it; want 2", v)
	}
}

// TestReview12JoinerLostTagCounterServedOldValue: the same with a tag:
// the tag is invalidated, then its counter lost; the joiner's stamp is nil,
// which currentFor does not compare.
func TestReview12JoinerLostTagCounterServedOldValue(t *testing.T) {
	v := joinerScenario(t, "jointag", []region.CallOption{region.WithTags("users")},
		func(w *region.Region) error { return w.InvalidateTags(bg, "users") },
		func(k string) bool { return strings.Contains(k, ":t:") && strings.Contains(k, "users") })
	if v != 2 {
		t.Fatalf("a read that began after the tag's invalidation returned was served %d, made before it; want 2", v)
	}
}

// TestReview12WrongTypeGenerationRepaired: the region-wide soft generation
// overwritten by a key of another type (a list). MGET reads it as missing,
// so setRecord guards its repair on "missing", and setIfScript's GET of the
// guard fails with WRONGTYPE: setRecord errors on every fill, nothing is
// ever stored again, and only a soft Invalidate (which the GORM plugin never
// makes) would repair it. The README says the next fill repairs it, as
// bumpScript and incrScript repair a counter of another type.
func TestReview12WrongTypeGenerationRepaired(t *testing.T) {
	for _, g := range []string{":S:", ":H:"} {
		t.Run(strings.Trim(g, ":"), func(t *testing.T) {
			b, raw := shared(t)
			r := region.New(b, region.WithName("wt"), region.WithExpiration(time.Hour))
			t.Cleanup(func() { _ = r.Close() })
			var c counting
			getInt(t, r, &c)
			var hit []string
			for _, k := range stateKeys(t, b, raw) {
				if strings.Contains(strings.TrimPrefix(k, b.Key("")), g) {
					hit = append(hit, k)
				}
			}
			if len(hit) != 1 {
				t.Fatalf("state keys %v: want one %s", stateKeys(t, b, raw), g)
			}
			if err := raw.Del(bg, hit[0]).Err(); err != nil {
				t.Fatal(err)
			}
			if err := raw.RPush(bg, hit[0], "x").Err(); err != nil {
				t.Fatal(err)
			}
			first := getInt(t, r, &c) // a miss: made again, and should repair
			for i := range 3 {
				if v := getInt(t, r, &c); v != first {
					t.Fatalf("read %d after the fill that should have repaired %s: made again (%d, first %d); errors=%d",
						i, hit[0], v, first, r.Stats().Errors)
				}
			}
		})
	}
}
