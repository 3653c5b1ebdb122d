package memcachebackend

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

// source is what the creators read: the tests change it behind the cache's
// back, as a write whose invalidation was lost with memcached would.
type source struct {
	value string
	calls int
}

func (s *source) get(ctx context.Context) (string, error) {
	s.calls++
	return s.value, nil
}

// TestRestartWithIdleConnections: after a restart, the connections the
// client kept idle to the server are dead; the first operation that meets
// one closes them all and dials afresh, so no operation fails once the
// server is back.
func TestRestartWithIdleConnections(t *testing.T) {
	srv := testharness.Memcached(t)
	b := newBackend(t, []string{srv.Addr})
	r := region.New(b, region.WithName("idle"))
	t.Cleanup(func() { _ = r.Close() })
	// Open 16 connections at once; they stay idle in the client's pool.
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			<-start
			if _, err := b.GetMulti(bg, []string{"warm"}); err != nil {
				t.Error(err)
			}
		})
	}
	close(start)
	wg.Wait()
	srv.Restart(t)
	for i := range 40 {
		if err := r.Set(bg, fmt.Sprint("k", i), "v", region.WithTags("t")); err != nil {
			t.Fatalf("Set %d after the restart: %v", i, err)
		}
		if err := r.InvalidateTags(bg, "u"); err != nil {
			t.Fatalf("InvalidateTags %d after the restart: %v", i, err)
		}
	}
	if st := r.Stats(); st.Errors != 0 {
		t.Fatalf("%d region errors after the restart", st.Errors)
	}
}

// TestRestartServesNothingStale: after memcached restarts, what it lost
// makes entries misses, never stale hits.
//
// On one server the restart loses the entries with their counters. With
// two servers it can lose what an entry depends on while the entry itself
// survives on the other server: a tag's counter, or the region's
// generations. The entry is then a miss, because a missing counter matches
// no stamp, and the counter made again starts from a fresh random value, so
// the old entry's stamp does not match it either. The test checks that the
// entry is still on the server that kept running, so a region that took a
// missing counter for a match would serve it.
func TestRestartServesNothingStale(t *testing.T) {
	t.Run("one-server", func(t *testing.T) {
		srv := testharness.Memcached(t)
		b := newBackend(t, []string{srv.Addr})
		r := region.New(b, region.WithName("restart"))
		t.Cleanup(func() { _ = r.Close() })
		src := &source{value: "before"}
		for range 2 {
			if v, err := region.GetOrCreate(bg, r, "k", src.get, region.WithTags("t")); err != nil || v != "before" {
				t.Fatalf("fill: %q, %v", v, err)
			}
		}
		src.value = "after"
		srv.Restart(t)
		v, err := region.GetOrCreate(bg, r, "k", src.get, region.WithTags("t"))
		if err != nil || v != "after" || src.calls != 2 {
			t.Fatalf("after the restart: %q, %v, %d creator calls; want the new value, made again", v, err, src.calls)
		}
	})

	a, c := testharness.Memcached(t), testharness.Memcached(t)
	var servers memcache.ServerList
	if err := servers.SetServers(a.Addr, c.Addr); err != nil {
		t.Fatal(err)
	}
	b := newBackend(t, []string{a.Addr, c.Addr})
	on := func(regionKey string) string {
		addr, err := servers.PickServer(b.Key(regionKey))
		if err != nil {
			t.Fatal(err)
		}
		return addr.String()
	}
	// The region's keys (region/record.go, region/tags.go): the entry
	// name:k:key, the generations name:H:{name:*} and name:S:{name:*}, the
	// tag counter name:t:{name:tag}.
	entry := func(name, key string) string { return name + ":k:" + key }
	hard := func(name string) string { return name + ":H:{" + name + ":*}" }
	soft := func(name string) string { return name + ":S:{" + name + ":*}" }
	counter := func(name, tag string) string { return name + ":t:{" + name + ":" + tag + "}" }

	for _, c2 := range []struct {
		name string
		// lost picks, among a region name, a key and a tag, the keys that
		// must be on the restarted server (c) and those that must stay (a).
		lost, kept func(name, key, tag string) []string
	}{
		{"two-servers/tag-counter-lost",
			func(n, k, tg string) []string { return []string{counter(n, tg)} },
			func(n, k, tg string) []string { return []string{entry(n, k), hard(n), soft(n)} }},
		{"two-servers/generations-lost",
			func(n, k, tg string) []string { return []string{hard(n), soft(n)} },
			func(n, k, tg string) []string { return []string{entry(n, k), counter(n, tg)} }},
	} {
		t.Run(c2.name, func(t *testing.T) {
			var name, key, tag string
		search:
			for i := range 1000 {
				name, key, tag = fmt.Sprintf("%s-%d", t.Name(), i), fmt.Sprintf("k%d", i), fmt.Sprintf("t%d", i)
				for _, k := range c2.lost(name, key, tag) {
					if on(k) != c.Addr {
						continue search
					}
				}
				for _, k := range c2.kept(name, key, tag) {
					if on(k) != a.Addr {
						continue search
					}
				}
				break
			}
			r := region.New(b, region.WithName(name))
			t.Cleanup(func() { _ = r.Close() })
			src := &source{value: "before"}
			for range 2 {
				if v, err := region.GetOrCreate(bg, r, key, src.get, region.WithTags(tag)); err != nil || v != "before" || src.calls != 1 {
					t.Fatalf("fill: %q, %v, %d creator calls", v, err, src.calls)
				}
			}
			rawA := rawClient(t, a.Addr)
			for _, k := range c2.lost(name, key, tag) {
				if _, err := rawClient(t, c.Addr).Get(b.Key(k)); err != nil {
					t.Fatalf("%s is not on the server to restart: %v", k, err)
				}
			}

			src.value = "after" // written while memcached restarted: the invalidation was lost
			c.Restart(t)
			rawC := rawClient(t, c.Addr)
			if _, err := rawA.Get(b.Key(entry(name, key))); err != nil {
				t.Fatalf("the entry did not survive on the other server: %v", err)
			}
			for _, k := range c2.lost(name, key, tag) {
				if _, err := rawC.Get(b.Key(k)); !errors.Is(err, memcache.ErrCacheMiss) {
					t.Fatalf("%s survived the restart: %v", k, err)
				}
			}
			var got string
			if found, err := r.Get(bg, key, &got, region.WithTags(tag)); err != nil || found {
				t.Fatalf("Get after the restart = %v (%q), %v; want a miss", found, got, err)
			}
			v, err := region.GetOrCreate(bg, r, key, src.get, region.WithTags(tag))
			if err != nil || v != "after" || src.calls != 2 {
				t.Fatalf("after the restart: %q, %v, %d creator calls; want the new value, made again", v, err, src.calls)
			}
			if v, _ := region.GetOrCreate(bg, r, key, src.get, region.WithTags(tag)); v != "after" || src.calls != 2 {
				t.Fatalf("the value made after the restart was not stored: %q, %d creator calls", v, src.calls)
			}
		})
	}
}
