package region_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	_ "github.com/dogpile-go/dogpile/backends/all"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/backends/null"
	redisbackend "github.com/dogpile-go/dogpile/backends/redis"
	"github.com/dogpile-go/dogpile/region"
)

// TestFromConfigMemory: every region option, read from its key under the
// prefix; keys under other prefixes are ignored.
func TestFromConfigMemory(t *testing.T) {
	cfg := map[string]string{
		"cache.backend":            "memory",
		"cache.max_bytes":          "1MiB",
		"cache.name":               "users",
		"cache.expiration":         "10m",
		"cache.stale_ttl":          "1h",
		"cache.lease":              "5s",
		"cache.wait_timeout":       "2s",
		"cache.wait_fallback":      "false",
		"cache.creator_timeout":    "1s",
		"cache.async_regeneration": "4",
		"cache.key_mangler":        "hash",
		"cache.codec":              "json",
		"other.backend":            "nothing-registered",
		"other.expiration":         "not a duration",
	}
	r, err := region.FromConfig(cfg, "cache.")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Name() != "users" || r.Expiration() != 10*time.Minute || r.InvalidationLease() != 5*time.Second {
		t.Fatalf("name %q, expiration %v, lease %v", r.Name(), r.Expiration(), r.InvalidationLease())
	}
	if _, ok := r.Codec().(region.JSONCodec); !ok {
		t.Fatalf("codec %T", r.Codec())
	}
	mb, ok := r.Backend().(*memory.Backend)
	if !ok {
		t.Fatalf("backend %T", r.Backend())
	}
	ctx := context.Background()
	if err := r.Set(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	// The key mangler: the entry is stored under the hash of its key.
	vals, err := mb.GetMulti(ctx, []string{"users:k:" + region.HashMangler("k"), "users:k:k"})
	if err != nil || vals[0] == nil || vals[1] != nil {
		t.Fatalf("the entry is not under its hashed key: %q, %v", vals, err)
	}
}

// TestFromConfigRedis: a Redis region from a URL; the region owns the
// backend and its client: Close closes them.
func TestFromConfigRedis(t *testing.T) {
	ctx := context.Background()
	r, err := region.FromConfig(map[string]string{
		"backend":          "redis",
		"url":              "redis://" + sharedAddr(t) + "/0?pool_size=4",
		"prefix":           "fromconfig",
		"timeout":          "2s",
		"lock_ttl":         "5s",
		"breaker_failures": "0",
		"expiration":       "1m",
	}, "")
	if err != nil {
		t.Fatal(err)
	}
	rb, ok := region.ActualBackend(r.Backend()).(*redisbackend.Backend)
	if !ok {
		t.Fatalf("backend %T", region.ActualBackend(r.Backend()))
	}
	if rb.Timeout() != 2*time.Second || rb.Key("x") != "fromconfig:x" {
		t.Fatalf("timeout %v, key %q", rb.Timeout(), rb.Key("x"))
	}
	if f := region.FeaturesOf(r); !f.TagBumper || !f.Timeout || f.Local {
		t.Fatalf("features %+v", f)
	}
	if v, err := region.GetOrCreate(ctx, r, "k", func(context.Context) (int, error) { return 1, nil }); err != nil || v != 1 {
		t.Fatalf("GetOrCreate: %d, %v", v, err)
	}
	var v int
	if found, err := r.Get(ctx, "k", &v); err != nil || !found {
		t.Fatalf("Get: %v, %v", found, err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := r.Get(ctx, "k", &v); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("Get after Close: %v, want the closed client's error", err)
	}
}

// TestFromConfigNull: a backend without arguments.
func TestFromConfigNull(t *testing.T) {
	r, err := region.FromConfig(map[string]string{"c.backend": "null"}, "c.")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, ok := r.Backend().(null.Backend); !ok || r.Name() != "default" || r.Expiration() != 0 {
		t.Fatalf("backend %T, name %q, expiration %v", r.Backend(), r.Name(), r.Expiration())
	}
}

// TestFromConfigErrors: an unknown backend, a bad value or an unknown key
// is an error matching ErrConfig that names the key, prefix included.
func TestFromConfigErrors(t *testing.T) {
	mem := func(kv ...string) map[string]string {
		m := map[string]string{"cache.backend": "memory"}
		for i := 0; i < len(kv); i += 2 {
			m["cache."+kv[i]] = kv[i+1]
		}
		return m
	}
	redis := func(kv ...string) map[string]string {
		m := mem(kv...)
		m["cache.backend"] = "redis"
		if _, ok := m["cache.url"]; !ok {
			m["cache.url"] = "redis://127.0.0.1:1/0"
		}
		return m
	}
	for _, tc := range []struct {
		name string
		cfg  map[string]string
		key  string
	}{
		{"no backend", map[string]string{"cache.expiration": "1m"}, "cache.backend"},
		{"unknown backend", map[string]string{"cache.backend": "memcache-typo"}, "cache.backend"},
		{"duration without a unit", mem("expiration", "10"), "cache.expiration"},
		{"negative duration", mem("stale_ttl", "-1s"), "cache.stale_ttl"},
		{"zero lease", mem("lease", "0s"), "cache.lease"},
		{"bad wait timeout", mem("wait_timeout", "soon"), "cache.wait_timeout"},
		{"bad creator timeout", mem("creator_timeout", "1"), "cache.creator_timeout"},
		{"bad boolean", mem("wait_fallback", "maybe"), "cache.wait_fallback"},
		{"bad integer", mem("async_regeneration", "many"), "cache.async_regeneration"},
		{"negative integer", mem("async_regeneration", "-1"), "cache.async_regeneration"},
		{"unknown mangler", mem("key_mangler", "md5"), "cache.key_mangler"},
		{"bad length mangler", mem("key_mangler", "length:0"), "cache.key_mangler"},
		{"unknown codec", mem("codec", "xml"), "cache.codec"},
		{"bad size", mem("max_bytes", "lots"), "cache.max_bytes"},
		{"zero size", mem("max_bytes", "0"), "cache.max_bytes"},
		{"unknown memory key", mem("max_byte", "1MiB"), "cache.max_byte"},
		{"argument of null", map[string]string{"cache.backend": "null", "cache.url": "x"}, "cache.url"},
		{"redis without url", func() map[string]string { m := redis(); delete(m, "cache.url"); return m }(), "cache.url"},
		{"redis bad url", redis("url", "http://127.0.0.1:1"), "cache.url"},
		{"redis bad url option", redis("url", "redis://127.0.0.1:1/0?bogus=1"), "cache.url"},
		{"redis bad timeout", redis("timeout", "fast"), "cache.timeout"},
		{"redis bad lock ttl", redis("lock_ttl", "long"), "cache.lock_ttl"},
		{"redis bad breaker", redis("breaker_failures", "x"), "cache.breaker_failures"},
		{"redis bad cooldown", redis("breaker_cooldown", "x"), "cache.breaker_cooldown"},
		{"redis bad cluster", redis("cluster", "maybe"), "cache.cluster"},
		{"redis brace in prefix", redis("prefix", "a{b"), "cache.prefix"},
		{"redis unknown key", redis("host", "x"), "cache.host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := region.FromConfig(tc.cfg, "cache.")
			if err == nil {
				r.Close()
				t.Fatal("no error")
			}
			var ce *region.ConfigError
			if !errors.Is(err, region.ErrConfig) || !errors.As(err, &ce) {
				t.Fatalf("%v: not an ErrConfig, or not a ConfigError", err)
			}
			if ce.Key != tc.key || !strings.Contains(err.Error(), tc.key) {
				t.Fatalf("error %q names key %q, want %q", err, ce.Key, tc.key)
			}
		})
	}
}

// TestFromConfigRedactsPasswords: an error about a Redis URL never shows
// its password.
func TestFromConfigRedactsPasswords(t *testing.T) {
	_, err := region.FromConfig(map[string]string{"backend": "redis", "url": "redis://user:s3cret@127.0.0.1:1/0?bogus=1"}, "")
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "user:xxxxx@") {
		t.Fatalf("error %v", err)
	}
}

// TestRegisterBackend: a third-party backend registers its name and is
// given its arguments without the prefix; a name registers once.
func TestRegisterBackend(t *testing.T) {
	var got map[string]string
	region.RegisterBackend("test-third-party", func(cfg map[string]string) (region.Backend, error) {
		got = cfg
		return memory.New(), nil
	})
	r, err := region.FromConfig(map[string]string{"x.backend": "test-third-party", "x.endpoint": "e", "x.expiration": "1s", "y.endpoint": "f"}, "x.")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if fmt.Sprint(got) != "map[endpoint:e]" {
		t.Fatalf("the factory was given %v", got)
	}
	names := region.RegisteredBackends()
	for _, n := range []string{"memory", "null", "redis", "test-third-party"} {
		if !slices.Contains(names, n) {
			t.Fatalf("registered %v: %q missing", names, n)
		}
	}
	for name, register := range map[string]func(){
		"twice": func() {
			region.RegisterBackend("memory", func(map[string]string) (region.Backend, error) { return nil, nil })
		},
		"no name": func() {
			region.RegisterBackend("", func(map[string]string) (region.Backend, error) { return nil, nil })
		},
		"nil factory": func() { region.RegisterBackend("test-nil", nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("RegisterBackend %s did not panic", name)
				}
			}()
			register()
		}()
	}
	// A factory's own failure is returned, with the backend's name.
	boom := errors.New("boom")
	region.RegisterBackend("test-failing", func(map[string]string) (region.Backend, error) { return nil, boom })
	if _, err := region.FromConfig(map[string]string{"backend": "test-failing"}, ""); !errors.Is(err, boom) || !strings.Contains(err.Error(), "test-failing") || errors.Is(err, region.ErrConfig) {
		t.Fatalf("a failing factory: %v", err)
	}
}
