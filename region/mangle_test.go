package region_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/dogpile-go/dogpile/region"
)

// The base64 (unpadded) of a SHA-256.
const hashLen = 43

func TestHashManglerFixedLength(t *testing.T) {
	for _, k := range []string{"", "a", "user:1", strings.Repeat("x", 250), strings.Repeat("é", 10000), "\x00\xff"} {
		h := region.HashMangler(k)
		if len(h) != hashLen {
			t.Fatalf("HashMangler(%.20q) has %d bytes; want %d", k, len(h), hashLen)
		}
		if strings.ContainsAny(h, "+/=: \t\n{}") {
			t.Fatalf("HashMangler(%.20q) = %q: characters a backend may not allow", k, h)
		}
		if region.HashMangler(k) != h {
			t.Fatalf("HashMangler(%.20q) is not deterministic", k)
		}
	}
}

func TestHashManglerDistinct(t *testing.T) {
	seen := make(map[string]string)
	add := func(k string) {
		h := region.HashMangler(k)
		if prev, ok := seen[h]; ok {
			t.Fatalf("HashMangler(%q) = HashMangler(%q) = %q", k, prev, h)
		}
		seen[h] = k
	}
	add("")
	for i := range 10000 {
		add(fmt.Sprint("user:", i))
	}
	add("user:1 ") // near misses of keys above
	add("User:1")
	add("user:01")
}

func TestLengthMangler(t *testing.T) {
	const max = 16
	m := region.LengthMangler(max)
	short := []string{"", "a", "user:1", strings.Repeat("k", max)}
	for _, k := range short {
		if got := m(k); got != k {
			t.Fatalf("short key %q changed to %q", k, got)
		}
	}
	for _, k := range []string{strings.Repeat("k", max+1), strings.Repeat("long key ", 100)} {
		got := m(k)
		if got != "#"+region.HashMangler(k) {
			t.Fatalf("long key %.20q: got %q; want '#' and its hash", k, got)
		}
		if len(got) != 1+hashLen {
			t.Fatalf("long key %.20q: %d bytes", k, len(got))
		}
	}
	// A short key that begins with '#' is hashed too, so it cannot pass for
	// the hash of a long key.
	long := strings.Repeat("x", 100)
	lookalike := "#" + region.HashMangler(long)
	lm := region.LengthMangler(len(lookalike))
	if got := lm(lookalike); got == lm(long) || got == lookalike {
		t.Fatalf("short key %q that looks like a hash was kept, or collides with the long key", lookalike)
	}
	for _, k := range []string{"#", "#1"} {
		if got := m(k); got != "#"+region.HashMangler(k) {
			t.Fatalf("short key %q beginning with '#': got %q; want it hashed", k, got)
		}
	}
	// Distinct keys stay distinct, whichever way each is mangled.
	seen := make(map[string]string)
	for _, k := range []string{"", "#", "a", "#a", strings.Repeat("a", max), strings.Repeat("a", max+1), "#" + strings.Repeat("a", max)} {
		got := m(k)
		if prev, ok := seen[got]; ok {
			t.Fatalf("LengthMangler maps %q and %q to %q", prev, k, got)
		}
		seen[got] = k
	}
}
