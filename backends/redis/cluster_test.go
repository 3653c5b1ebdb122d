package redisbackend

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
	"github.com/dogpile-go/dogpile/region/regiontest"
)

// TestCluster runs everything that differs on a Redis Cluster against a
// real 3-node cluster, started once for all its subtests.
func TestCluster(t *testing.T) {
	cl := testharness.RedisCluster(t, 3)
	client := newClusterClient(t, cl.Addrs)
	// processes returns two backends with the same prefix and clients of
	// their own.
	processes := func(t *testing.T, opts ...Option) (a, b *Backend) {
		all := append([]Option{WithPrefix(uniquePrefix(t))}, opts...)
		return newBackend(t, newClusterClient(t, cl.Addrs), all...), newBackend(t, newClusterClient(t, cl.Addrs), all...)
	}

	t.Run("Region", func(t *testing.T) {
		regiontest.Run(t, func(t testing.TB) region.Backend {
			return newBackend(t, client, WithPrefix(uniquePrefix(t)))
		})
	})

	t.Run("KeySlots", func(t *testing.T) {
		// Our slot computation agrees with the server's, for keys and
		// their locks.
		for _, p := range []string{"", "app:"} {
			b := newBackend(t, client, WithPrefix(p))
			for _, k := range lockKeyCases {
				want, err := client.ClusterKeySlot(bg, p+k).Result()
				if err != nil {
					t.Fatal(err)
				}
				if got := slot(p + k); int64(got) != want {
					t.Errorf("slot(%q) = %d, server says %d", p+k, got, want)
				}
				if got := client.ClusterKeySlot(bg, b.Lock(k).Key()).Val(); got != want {
					t.Errorf("lock of %q (%q) in slot %d, key in slot %d", p+k, b.Lock(k).Key(), got, want)
				}
			}
		}
	})

	t.Run("GetSetDeleteAcrossSlots", func(t *testing.T) {
		b := newBackend(t, client, WithPrefix(uniquePrefix(t)))
		keys := make([]string, 50)
		items := make([]region.Item, len(keys))
		nodes := map[string]bool{}
		for i := range keys {
			keys[i] = "suite:k:" + strconv.Itoa(i)
			items[i] = region.Item{Key: keys[i], Value: []byte("v" + strconv.Itoa(i)), TTL: time.Duration(i) * time.Minute}
			nodes[masterOf(t, client, b.Key(keys[i]))] = true
		}
		if len(nodes) != 3 {
			t.Fatalf("keys on %d nodes, want all 3", len(nodes))
		}
		if err := b.SetMulti(bg, items); err != nil {
			t.Fatal(err)
		}
		got, err := b.GetMulti(bg, append(keys, "missing"))
		if err != nil {
			t.Fatal(err)
		}
		for i, k := range keys {
			if string(got[i]) != "v"+strconv.Itoa(i) {
				t.Fatalf("GetMulti[%s] = %q", k, got[i])
			}
		}
		if got[len(keys)] != nil {
			t.Fatalf("missing key read as %q", got[len(keys)])
		}
		if pttl := client.PTTL(bg, b.Key(keys[0])).Val(); pttl != -1 {
			t.Fatalf("TTL 0 stored with PTTL %v", pttl)
		}
		if pttl := client.PTTL(bg, b.Key(keys[2])).Val(); pttl <= 0 || pttl > 2*time.Minute {
			t.Fatalf("TTL 2m stored with PTTL %v", pttl)
		}
		if err := b.Delete(bg, keys[:40]...); err != nil {
			t.Fatal(err)
		}
		got, err = b.GetMulti(bg, keys)
		if err != nil {
			t.Fatal(err)
		}
		for i := range keys {
			if (got[i] == nil) != (i < 40) {
				t.Fatalf("after Delete, key %d = %q", i, got[i])
			}
		}
	})

	t.Run("SetIfAcrossSlots", func(t *testing.T) {
		b := newBackend(t, client, WithPrefix(uniquePrefix(t)))
		const key = "suite:k:item"
		// Tag counters in other slots than the item, and the lock fence in
		// its slot.
		var tags []string
		for i := 0; len(tags) < 2; i++ {
			tk := "suite:t:{suite:tag" + strconv.Itoa(i) + "}"
			if slot(b.Key(tk)) != slot(b.Key(key)) {
				tags = append(tags, tk)
			}
		}
		stamps := make([][]byte, len(tags))
		for i, tk := range tags {
			n, err := b.Incr(bg, tk)
			if err != nil {
				t.Fatal(err)
			}
			stamps[i] = []byte(strconv.FormatInt(n, 10))
		}
		lock := b.Lock(key)
		if ok, err := lock.TryLock(bg); !ok || err != nil {
			t.Fatal(ok, err)
		}
		defer lock.Unlock(bg)
		guards := func(fence region.Guard) []region.Guard {
			return []region.Guard{{Key: tags[0], Value: stamps[0]}, fence, {Key: tags[1], Value: stamps[1]}, {Key: "suite:p:{suite:tag0}"}}
		}
		item := region.Item{Key: key, Value: []byte("v1"), TTL: time.Minute}
		if ok, err := b.SetIf(bg, item, guards(lock.Fence())); !ok || err != nil {
			t.Fatalf("SetIf with holding guards = %v, %v", ok, err)
		}
		// A tag in another slot bumped: not stored.
		if _, err := b.Incr(bg, tags[1]); err != nil {
			t.Fatal(err)
		}
		item.Value = []byte("v2")
		if ok, err := b.SetIf(bg, item, guards(lock.Fence())); ok || err != nil {
			t.Fatalf("SetIf after a tag bump = %v, %v", ok, err)
		}
		// A wrong fence in the item's slot: not stored.
		n, _ := b.Incr(bg, tags[1])
		stamps[1] = []byte(strconv.FormatInt(n, 10))
		if ok, err := b.SetIf(bg, item, guards(region.Guard{Key: lock.suffix, Value: []byte("not the token")})); ok || err != nil {
			t.Fatalf("SetIf with a wrong fence = %v, %v", ok, err)
		}
		if got := client.Get(bg, b.Key(key)).Val(); got != "v1" {
			t.Fatalf("item = %q, want v1", got)
		}
		if ok, err := b.SetIf(bg, item, guards(lock.Fence())); !ok || err != nil {
			t.Fatalf("SetIf with guards holding again = %v, %v", ok, err)
		}
		if got := client.Get(bg, b.Key(key)).Val(); got != "v2" {
			t.Fatalf("item = %q, want v2", got)
		}
	})

	t.Run("Incr", func(t *testing.T) {
		b := newBackend(t, client, WithPrefix(uniquePrefix(t)))
		seen := map[int64]bool{}
		for i := range 20 {
			k := "suite:t:{suite:" + strconv.Itoa(i) + "}"
			n, err := b.Incr(bg, k)
			if err != nil {
				t.Fatal(err)
			}
			if m, err := b.Incr(bg, k); err != nil || m != n+1 {
				t.Fatalf("second Incr = %d, %v after %d", m, err, n)
			}
			if seen[n] {
				t.Fatalf("two counters started at %d", n)
			}
			seen[n] = true
			vals, err := b.GetMulti(bg, []string{k, "suite:p:{suite:" + strconv.Itoa(i) + "}"})
			if err != nil || string(vals[0]) != strconv.FormatInt(n+1, 10) || vals[1] != nil {
				t.Fatalf("GetMulti(counter, pending) = %q, %v", vals, err)
			}
		}
	})

	t.Run("Mutex", func(t *testing.T) {
		a, b := processes(t, WithLockTTL(time.Minute))
		for i := range 6 { // keys on every node
			key := fmt.Sprintf("suite:k:%d", i)
			la, lb := a.Lock(key), b.Lock(key)
			if ok, err := la.TryLock(bg); !ok || err != nil {
				t.Fatalf("%s: A TryLock = %v, %v", key, ok, err)
			}
			if ok, err := lb.TryLock(bg); ok || err != nil {
				t.Fatalf("%s: B TryLock while A holds = %v, %v", key, ok, err)
			}
			if ok, err := a.SetIf(bg, region.Item{Key: key, Value: []byte("A")}, []region.Guard{la.Fence()}); !ok || err != nil {
				t.Fatalf("%s: fenced write = %v, %v", key, ok, err)
			}
			notified, stop := b.notify.watch(lb.Key())
			done := make(chan error, 1)
			go func() { done <- lb.Wait(bg) }()
			waitFor(t, "B to subscribe", func() bool {
				n, _ := client.PubSubNumSub(bg, lb.Key()).Result()
				return n[lb.Key()] > 0
			})
			if err := la.Unlock(bg); err != nil {
				t.Fatal(err)
			}
			select {
			case <-notified: // published from the lock's node, heard on the subscriber's
			case <-time.After(eventually):
				t.Fatalf("%s: no unlock notification", key)
			}
			stop()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("%s: Wait = %v", key, err)
				}
			case <-time.After(eventually):
				t.Fatalf("%s: Wait did not return after Unlock", key)
			}
			if ok, err := lb.TryLock(bg); !ok || err != nil {
				t.Fatalf("%s: B TryLock after A unlocked = %v, %v", key, ok, err)
			}
			// A's lock is gone: its fence no longer holds.
			if ok, err := a.SetIf(bg, region.Item{Key: key, Value: []byte("late A")}, []region.Guard{la.Fence()}); ok || err != nil {
				t.Fatalf("%s: write fenced by A after unlock = %v, %v", key, ok, err)
			}
			if err := lb.Unlock(bg); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("WaitDeadHolder", func(t *testing.T) {
		b := newBackend(t, client, WithPrefix(uniquePrefix(t)))
		l := b.Lock("suite:k:x")
		if err := client.Set(bg, l.Key(), "dead", 500*time.Millisecond).Err(); err != nil {
			t.Fatal(err)
		}
		var err error
		within(t, "Wait", func() { err = l.Wait(bg) })
		if err != nil || client.Exists(bg, l.Key()).Val() != 0 {
			t.Fatalf("Wait = %v, lock exists = %d", err, client.Exists(bg, l.Key()).Val())
		}
	})

	t.Run("RegionTagsAcrossSlots", func(t *testing.T) {
		// A region value with tags in other slots is invalidated by the tag.
		b := newBackend(t, client, WithPrefix(uniquePrefix(t)))
		r := region.New(b, region.WithName("suite"))
		calls := 0
		create := func(context.Context) (string, error) {
			calls++
			return "v" + strconv.Itoa(calls), nil
		}
		get := func() string {
			v, err := region.GetOrCreate(bg, r, "x", create, region.WithTags("users", "orders"))
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		if v := get(); v != "v1" {
			t.Fatalf("first = %q", v)
		}
		if v := get(); v != "v1" {
			t.Fatalf("hit = %q", v)
		}
		if err := r.InvalidateTags(bg, "orders"); err != nil {
			t.Fatal(err)
		}
		if v := get(); v != "v2" {
			t.Fatalf("after invalidation = %q", v)
		}
	})
}

// masterOf returns the address of the node that serves key.
func masterOf(t *testing.T, c *goredis.ClusterClient, key string) string {
	var addr string
	shards, err := c.ClusterShards(bg).Result()
	if err != nil {
		t.Fatal(err)
	}
	s := int64(slot(key))
	for _, sh := range shards {
		for _, r := range sh.Slots {
			if s >= r.Start && s <= r.End {
				for _, n := range sh.Nodes {
					if n.Role == "master" {
						addr = fmt.Sprintf("%s:%d", n.IP, n.Port)
					}
				}
			}
		}
	}
	if addr == "" {
		t.Fatalf("no master for slot %d", s)
	}
	return addr
}
