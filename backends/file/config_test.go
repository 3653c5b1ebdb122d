package filebackend

import (
	"context"
	"errors"
	"testing"

	"github.com/dogpile-go/dogpile/region"
)

// TestFromConfig: region.FromConfig makes a working region over a file
// backend from its registered name, values survive a second region made
// from the same configuration, and a bad argument is an error naming its
// key.
func TestFromConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := map[string]string{
		"cache.backend":     ConfigName,
		"cache.dir":         dir,
		"cache.max_bytes":   "1MiB",
		"cache.max_entries": "100",
		"cache.expiration":  "1h",
	}
	calls := 0
	create := func(context.Context) (string, error) { calls++; return "v", nil }
	for range 2 {
		r, err := region.FromConfig(cfg, "cache.")
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := r.Backend().(*Backend); !ok {
			t.Fatalf("backend %T", r.Backend())
		}
		if v, err := region.GetOrCreate(context.Background(), r, "k", create); err != nil || v != "v" {
			t.Fatalf("GetOrCreate = %q, %v", v, err)
		}
		if err := r.Close(); err != nil { // closes the backend it owns
			t.Fatal(err)
		}
	}
	if calls != 1 {
		t.Errorf("creator ran %d times over two regions on one folder; want 1", calls)
	}
	for key, value := range map[string]string{
		"cache.dir":       "",
		"cache.max_bytes": "lots",
		"cache.timeout":   "-",
		"cache.sync":      "maybe",
		"cache.colour":    "blue",
	} {
		c := map[string]string{"cache.backend": ConfigName, "cache.dir": t.TempDir(), key: value}
		_, err := region.FromConfig(c, "cache.")
		var ce *region.ConfigError
		if !errors.Is(err, region.ErrConfig) || !errors.As(err, &ce) || ce.Key != key {
			t.Errorf("%s=%q: FromConfig error %v; want a ConfigError naming %s", key, value, err, key)
		}
	}
}
