package redisbackend

import (
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

func TestCRC16AndSlots(t *testing.T) {
	if got := crc16("123456789"); got != 0x31C3 {
		t.Fatalf("crc16(123456789) = %#x, want 0x31c3", got)
	}
	// Values given by CLUSTER KEYSLOT (also checked against a real cluster in
	// TestClusterKeySlots).
	for key, want := range map[string]int{"foo": 12182, "hello": 866, "somekey": 11058, "{user1000}.following": slot("user1000")} {
		if got := slot(key); got != want {
			t.Errorf("slot(%q) = %d, want %d", key, got, want)
		}
	}
	for key, want := range map[string]string{
		"abc": "abc", "a{b}c": "b", "a{}b": "a{}b", "a{b": "a{b", "a}b{c}": "c", "{}{x}": "{}{x}", "x{y}{z}": "y", "{": "{", "": "",
	} {
		if got := hashPart(key); got != want {
			t.Errorf("hashPart(%q) = %q, want %q", key, got, want)
		}
	}
}

// lockKeyCases are keys whose locks must share their slot.
var lockKeyCases = []string{
	"k", "suite:k:user:42", "a{b}c", "a{}b", "a}b", "{}", "{", "}", "}{", "x{y}{z}", "{}{x}",
	"suite:t:{suite:users}", "suite:k:{42}", "weird:{:k", "long:" + string(make([]byte, 300)),
}

func TestLockKeySlot(t *testing.T) {
	for _, p := range []string{"", "app:", "a}pp:"} {
		seen := map[string]string{}
		for _, k := range lockKeyCases {
			s := lockSuffix(p, k)
			if got, want := slot(p+s), slot(p+k); got != want {
				t.Errorf("prefix %q key %q: lock %q in slot %d, key in slot %d", p, k, p+s, got, want)
			}
			if s[0] != '{' {
				t.Errorf("prefix %q key %q: lock suffix %q does not start with '{'", p, k, s)
			}
			if other, dup := seen[s]; dup {
				t.Errorf("prefix %q: keys %q and %q share the lock %q", p, other, k, s)
			}
			seen[s] = k
		}
	}
	if got := lockSuffix("", "suite:k:x"); got != "{suite:k:x}:lock" {
		t.Errorf("lock of a plain key = %q", got)
	}
}

func TestPrefixWithBracePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("New accepted a prefix with '{'")
		}
	}()
	New(goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1"}), WithPrefix("a{b"))
}

func TestGetSetDelete(t *testing.T) {
	b, raw := shared(t)
	vals, err := b.GetMulti(bg, []string{"a", "b"})
	if err != nil || len(vals) != 2 || vals[0] != nil || vals[1] != nil {
		t.Fatalf("GetMulti on missing keys = %q, %v", vals, err)
	}
	if vals, err := b.GetMulti(bg, nil); err != nil || len(vals) != 0 {
		t.Fatalf("GetMulti() = %q, %v", vals, err)
	}
	err = b.SetMulti(bg, []region.Item{
		{Key: "a", Value: []byte("1"), TTL: time.Hour},
		{Key: "b", Value: []byte{}},
		{Key: "c", Value: []byte("\x00\xff binary")},
	})
	if err != nil {
		t.Fatal(err)
	}
	vals, err = b.GetMulti(bg, []string{"c", "missing", "a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	want := [][]byte{[]byte("\x00\xff binary"), nil, []byte("1"), {}}
	for i := range want {
		if (vals[i] == nil) != (want[i] == nil) || string(vals[i]) != string(want[i]) {
			t.Fatalf("GetMulti = %q, want %q", vals, want)
		}
	}
	if pttl := raw.PTTL(bg, b.Key("a")).Val(); pttl <= 0 || pttl > time.Hour {
		t.Errorf("PTTL of a = %v, want (0, 1h]", pttl)
	}
	if pttl := raw.PTTL(bg, b.Key("b")).Val(); pttl != -1 {
		t.Errorf("PTTL of b = %v, want no expiry", pttl)
	}
	if got := raw.Get(bg, b.Key("c")).Val(); got != "\x00\xff binary" {
		t.Errorf("raw value of c = %q: the prefix is not %q", got, b.prefix)
	}
	if err := b.SetMulti(bg, []region.Item{{Key: "short", Value: []byte("x"), TTL: 50 * time.Microsecond}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a sub-millisecond TTL to expire", func() bool { return raw.Exists(bg, b.Key("short")).Val() == 0 })

	if err := b.Delete(bg, "a", "b", "missing"); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(bg); err != nil {
		t.Fatal(err)
	}
	vals, err = b.GetMulti(bg, []string{"a", "b", "c"})
	if err != nil || vals[0] != nil || vals[1] != nil || vals[2] == nil {
		t.Fatalf("after Delete(a, b): %q, %v", vals, err)
	}
}

func TestSetIf(t *testing.T) {
	b, raw := shared(t)
	item := region.Item{Key: "item", Value: []byte("v1"), TTL: time.Minute}
	if err := b.SetMulti(bg, []region.Item{{Key: "g1", Value: []byte("x")}, {Key: "empty", Value: []byte{}}}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		guards []region.Guard
		want   bool
	}{
		{"no guards", nil, true},
		{"value holds", []region.Guard{{Key: "g1", Value: []byte("x")}}, true},
		{"value differs", []region.Guard{{Key: "g1", Value: []byte("y")}}, false},
		{"value wanted, key missing", []region.Guard{{Key: "nokey", Value: []byte("x")}}, false},
		{"absent holds", []region.Guard{{Key: "nokey", Value: nil}}, true},
		{"absent fails", []region.Guard{{Key: "g1", Value: nil}}, false},
		{"empty value holds", []region.Guard{{Key: "empty", Value: []byte{}}}, true},
		{"empty value is not absent", []region.Guard{{Key: "empty", Value: nil}}, false},
		{"absent is not empty", []region.Guard{{Key: "nokey", Value: []byte{}}}, false},
		{"all hold", []region.Guard{{Key: "g1", Value: []byte("x")}, {Key: "nokey"}, {Key: "empty", Value: []byte{}}}, true},
		{"one of several fails", []region.Guard{{Key: "g1", Value: []byte("x")}, {Key: "nokey", Value: []byte("1")}}, false},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := b.Delete(bg, "item"); err != nil {
				t.Fatal(err)
			}
			it := item
			it.Value = []byte(strconv.Itoa(i))
			ok, err := b.SetIf(bg, it, c.guards)
			if err != nil || ok != c.want {
				t.Fatalf("SetIf = %v, %v; want %v", ok, err, c.want)
			}
			got, err := raw.Get(bg, b.Key("item")).Result()
			if c.want {
				if err != nil || got != strconv.Itoa(i) {
					t.Fatalf("stored %q, %v; want %q", got, err, strconv.Itoa(i))
				}
				if pttl := raw.PTTL(bg, b.Key("item")).Val(); pttl <= 0 || pttl > time.Minute {
					t.Fatalf("PTTL = %v, want (0, 1m]", pttl)
				}
			} else if !errors.Is(err, goredis.Nil) {
				t.Fatalf("item stored (%q, %v) although a guard failed", got, err)
			}
		})
	}
	// A guard on a counter compares its decimal text.
	n, err := b.Incr(bg, "ctr")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := b.SetIf(bg, item, []region.Guard{{Key: "ctr", Value: []byte(strconv.FormatInt(n, 10))}}); !ok || err != nil {
		t.Fatalf("SetIf guarded by the counter's value = %v, %v", ok, err)
	}
	if ok, err := b.SetIf(bg, item, []region.Guard{{Key: "ctr", Value: []byte(strconv.FormatInt(n-1, 10))}}); ok || err != nil {
		t.Fatalf("SetIf guarded by a stale counter value = %v, %v", ok, err)
	}
	// No TTL: no expiry.
	if ok, err := b.SetIf(bg, region.Item{Key: "forever", Value: []byte("x")}, nil); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if pttl := raw.PTTL(bg, b.Key("forever")).Val(); pttl != -1 {
		t.Fatalf("PTTL = %v, want no expiry", pttl)
	}
}

func TestIncr(t *testing.T) {
	b, raw := shared(t)
	var seen []int64
	for range 3 {
		n, err := b.Incr(bg, "c")
		if err != nil {
			t.Fatal(err)
		}
		if len(seen) > 0 && n != seen[len(seen)-1]+1 {
			t.Fatalf("Incr = %d after %d", n, seen[len(seen)-1])
		}
		seen = append(seen, n)
	}
	if seen[0] > 1<<48 {
		t.Fatalf("first value %d is not a 48-bit start plus one", seen[0])
	}
	vals, err := b.GetMulti(bg, []string{"c"})
	if err != nil || string(vals[0]) != strconv.FormatInt(seen[2], 10) {
		t.Fatalf("GetMulti(counter) = %q, %v; want %d", vals, err, seen[2])
	}
	if pttl := raw.PTTL(bg, b.Key("c")).Val(); pttl != -1 {
		t.Fatalf("counter PTTL = %v, want no expiry", pttl)
	}
	// Made again after a delete, a counter does not repeat its values.
	starts := map[int64]bool{seen[0]: true}
	for range 5 {
		if err := b.Delete(bg, "c"); err != nil {
			t.Fatal(err)
		}
		n, err := b.Incr(bg, "c")
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(seen, n) {
			t.Fatalf("counter repeated %d after DEL (had %v)", n, seen)
		}
		if starts[n] {
			t.Fatalf("counter started at %d twice", n)
		}
		starts[n] = true
		seen = append(seen, n)
	}
	// Two counters start from different values.
	a, _ := b.Incr(bg, "other1")
	c, _ := b.Incr(bg, "other2")
	if a == c {
		t.Fatalf("two new counters both at %d", a)
	}
}

// TestErrorsWrapped: an error reply is returned wrapped, and does not count
// against the breaker: a server out of memory (noeviction) refuses a
// SetMulti with an OOM reply, and reads go on. (Incr, SetIf and BumpTags
// are not examples: they repair a key of another type instead of failing.)
func TestErrorsWrapped(t *testing.T) {
	srv := testharness.Redis(t)
	raw := newClient(t, srv.Addr)
	b := newBackend(t, raw, WithBreaker(1, time.Hour))
	for _, err := range []error{
		raw.ConfigSet(bg, "maxmemory-policy", "noeviction").Err(),
		raw.ConfigSet(bg, "maxmemory", "1").Err(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	err := b.SetMulti(bg, []region.Item{{Key: "x", Value: []byte("1")}})
	var rerr goredis.Error
	if err == nil || !errors.As(err, &rerr) {
		t.Fatalf("SetMulti on a server out of memory = %v, want a wrapped redis error", err)
	}
	if _, err := b.GetMulti(bg, []string{"x"}); err != nil {
		t.Fatalf("the breaker opened on error replies: %v", err)
	}
}

// TestIncrRepairsUnreadableCounters: a counter key holding what INCR cannot
// take (text, a float, a list) is set to a fresh start by Incr, which then
// succeeds and leaves a decimal counter behind.
func TestIncrRepairsUnreadableCounters(t *testing.T) {
	b, raw := shared(t)
	for _, err := range []error{
		raw.Set(bg, b.Key("text"), "garbage", 0).Err(),
		raw.Set(bg, b.Key("float"), "1.5", 0).Err(),
		raw.LPush(bg, b.Key("list"), "x").Err(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"text", "float", "list"} {
		n, err := b.Incr(bg, k)
		if err != nil {
			t.Fatalf("Incr on %s: %v", k, err)
		}
		got, err := raw.Get(bg, b.Key(k)).Int64()
		if err != nil || got != n {
			t.Fatalf("%s after Incr = %d, %v; want %d", k, got, err, n)
		}
	}
}
