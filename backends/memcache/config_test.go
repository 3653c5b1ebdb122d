package memcachebackend

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

// TestFromConfig: region.FromConfig makes a working region over memcached
// from the backend's registered name, and a bad argument is an error naming
// its key.
func TestFromConfig(t *testing.T) {
	srv := testharness.Memcached(t)
	r, err := region.FromConfig(map[string]string{
		"cache.backend":       ConfigName,
		"cache.addrs":         srv.Addr,
		"cache.prefix":        "cfg",
		"cache.timeout":       "250ms",
		"cache.max_item_size": "64KiB",
		"cache.expiration":    "1m",
	}, "cache.")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, ok := r.Backend().(*Backend)
	if !ok {
		t.Fatalf("backend %T", r.Backend())
	}
	if b.Timeout() != 250*time.Millisecond {
		t.Errorf("timeout %v", b.Timeout())
	}
	calls := 0
	for range 3 {
		v, err := region.GetOrCreate(context.Background(), r, "k", func(context.Context) (string, error) { calls++; return "v", nil })
		if err != nil || v != "v" {
			t.Fatalf("GetOrCreate = %q, %v", v, err)
		}
	}
	if calls != 1 {
		t.Errorf("creator ran %d times; want 1", calls)
	}
	for key, value := range map[string]string{
		"cache.addrs":            "",
		"cache.timeout":          "soon",
		"cache.max_item_size":    "big",
		"cache.breaker_failures": "x",
		"cache.unknown_thing":    "1",
	} {
		cfg := map[string]string{"cache.backend": ConfigName, "cache.addrs": srv.Addr, key: value}
		_, err := region.FromConfig(cfg, "cache.")
		var ce *region.ConfigError
		if !errors.Is(err, region.ErrConfig) || !errors.As(err, &ce) || ce.Key != key {
			t.Errorf("%s=%q: FromConfig error %v; want a ConfigError naming %s", key, value, err, key)
		}
	}
}
