package crossproc

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	redisbackend "github.com/dogpile-go/dogpile/backends/redis"
	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

const (
	holderLockTTL = 3 * time.Second
	holderKey     = "slow"
	holderBKey    = "default:k:" + holderKey // the backend key of holderKey in region "default"
)

func init() { childRoles["holder"] = childHolder }

// childHolder becomes the creator of holderKey, reports the token of the
// distributed lock it holds ("creating TOKEN") and blocks in the creator
// until it is killed.
func childHolder(t *testing.T) {
	rc := childRedis(t)
	be := newBackend(t, rc, os.Getenv(envPrefix), redisbackend.WithLockTTL(holderLockTTL))
	r := region.New(be, region.WithName("default"))
	lockKey := be.Lock(holderBKey).Key()
	_, err := region.GetOrCreate(context.Background(), r, holderKey, func(ctx context.Context) (string, error) {
		tok, err := rc.Get(ctx, lockKey).Result()
		if err != nil {
			return "", err
		}
		say("creating %s", tok)
		time.Sleep(eventually) // a creator that hangs: the parent kills us
		return "made by the dead holder", nil
	})
	say("error GetOrCreate returned (%v) instead of hanging", err)
}

// TestLockHolderKilled: the process that holds the regeneration lock dies
// mid-creation. Another process waiting for the same key takes the lock once
// the dead holder's lease ran out (nobody released it early), regenerates,
// and stores its value under its own lock.
func TestLockHolderKilled(t *testing.T) {
	srv := testharness.SharedRedis(t)
	rc := newRedisClient(t, srv.Addr)
	prefix := uniquePrefix(t)
	ctx := context.Background()
	be := newBackend(t, rc, prefix, redisbackend.WithLockTTL(holderLockTTL))
	r := region.New(be, region.WithName("default"))
	lockKey := be.Lock(holderBKey).Key()

	holder := startChild(t, "holder", "holder", envRedis+"="+srv.Addr, envPrefix+"="+prefix)
	deadTok := holder.expect("creating")
	if deadTok == "" {
		t.Fatal("the holder saw no token in its lock key")
	}
	holder.kill()
	if tok, err := rc.Get(ctx, lockKey).Result(); err != nil || tok != deadTok {
		t.Fatalf("right after the holder died the lock key holds %q (%v); want its token %q", tok, err, deadTok)
	}

	// Watch the lock key from now on: it must go from the dead holder's
	// token, through expiry, to the new holder's, and nothing else.
	var (
		mu       sync.Mutex
		seen     []string // consecutive distinct values; "" is missing
		stopWatc = make(chan struct{})
		watched  = make(chan struct{})
	)
	go func() {
		defer close(watched)
		last := "\x00"
		for {
			select {
			case <-stopWatc:
				return
			default:
			}
			v, err := rc.Get(ctx, lockKey).Result()
			if errors.Is(err, goredis.Nil) {
				v, err = "", nil
			}
			if err == nil && v != last {
				mu.Lock()
				seen = append(seen, v)
				mu.Unlock()
				last = v
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()

	var (
		runs       int
		newTok     string
		otherTried bool
		otherGot   bool
		afterOther string
	)
	got := make(chan error, 1)
	var v string
	go func() {
		var err error
		v, err = region.GetOrCreate(ctx, r, holderKey, func(ctx context.Context) (string, error) {
			runs++
			tok, err := rc.Get(ctx, lockKey).Result()
			if err != nil {
				return "", err
			}
			newTok = tok
			// The lock is this caller's: another Lock on the key can
			// neither take it nor release it.
			other := be.Lock(holderBKey)
			otherTried = true
			otherGot, _ = other.TryLock(ctx)
			_ = other.Unlock(ctx)
			afterOther, _ = rc.Get(ctx, lockKey).Result()
			time.Sleep(50 * time.Millisecond) // long enough for the watcher to see the token
			return "made by the new holder", nil
		})
		got <- err
	}()
	select {
	case err := <-got:
		must(t, err)
	case <-time.After(eventually):
		t.Fatal("the waiting caller never regenerated the key")
	}
	close(stopWatc)
	<-watched

	if v != "made by the new holder" || runs != 1 {
		t.Fatalf("GetOrCreate: %q with %d creator runs; want the new holder's value, made once", v, runs)
	}
	if newTok == "" || newTok == deadTok {
		t.Fatalf("during the new creation the lock key held %q; want a token of the new holder (dead holder's: %q)", newTok, deadTok)
	}
	if !otherTried || otherGot || afterOther != newTok {
		t.Errorf("another Lock on the held key: TryLock %v, key afterwards %q; want false and %q", otherGot, afterOther, newTok)
	}
	var stored string
	found, err := r.Get(ctx, holderKey, &stored)
	must(t, err)
	if !found || stored != "made by the new holder" {
		t.Errorf("stored value %q (found %v); want the new holder's", stored, found)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("lock key values seen: %q", seen)
	// Expected: deadTok, "", newTok, "" (the release); the "" between the
	// two tokens may be missed by the poll.
	idxNew := -1
	for i, s := range seen {
		switch s {
		case deadTok, "":
		case newTok:
			if idxNew < 0 {
				idxNew = i
			}
		default:
			t.Errorf("the lock key held a token of neither holder: %q", s)
		}
		if s == deadTok && idxNew >= 0 {
			t.Errorf("the dead holder's token came back after the new holder took the lock")
		}
	}
	if len(seen) == 0 || seen[0] != deadTok || idxNew < 0 {
		t.Errorf("lock key history %q: want the dead holder's token first, then the new holder's", seen)
	}
}
