package region

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Configuration from a map, dogpile's configure_from_config: the backend
// is named by the key <prefix>backend and made by the factory registered
// under that name; every other key under the prefix is a region option
// (listed on FromConfig) or, if it is none, an argument of the backend.

// ErrConfig is what every configuration error matches (errors.Is): an
// unknown backend, a bad value or an unknown key. Each is a *ConfigError
// naming the key.
var ErrConfig = errors.New("region: bad configuration")

// ConfigError is a configuration error about one key.
type ConfigError struct {
	// Key is the key at fault, with the prefix FromConfig was given (a
	// backend factory names it without: FromConfig adds the prefix).
	Key string
	// Value is the key's value, as given.
	Value string
	// Err says what is wrong with it.
	Err error
}

// Error names the key, its value and what is wrong.
func (e *ConfigError) Error() string {
	return fmt.Sprintf("region: config %s=%q: %v", e.Key, e.Value, e.Err)
}

// Unwrap returns Err.
func (e *ConfigError) Unwrap() error { return e.Err }

// Is reports whether target is ErrConfig: every ConfigError is one.
func (e *ConfigError) Is(target error) bool { return target == ErrConfig }

// BackendFactory makes a backend from its arguments: the keys under the
// prefix given to FromConfig that are not region options, with the prefix
// taken off ("cache.url" is given as "url"). A factory should reject keys it
// does not know and values it cannot read, with a *ConfigError naming the
// key as it was given; ConfigArgs does both.
type BackendFactory func(cfg map[string]string) (Backend, error)

// backends is the registry of backend factories by name.
var backends struct {
	mu sync.RWMutex
	m  map[string]BackendFactory // guarded by mu
}

// RegisterBackend makes a backend known to FromConfig by name. Each backend
// package shipped with dogpile-go registers its own from an init function
// ("memory", "null", "redis", "memcached", "file"), so a program names a
// backend in its configuration after importing its package, if only for
// that (a blank import: import _ "github.com/dogpile-go/dogpile/backends/redis"),
// or imports backends/all for all of them. A third-party backend registers
// itself the same way. RegisterBackend panics if name is empty, if factory is
// nil, or if name is registered already.
func RegisterBackend(name string, factory BackendFactory) {
	if name == "" || factory == nil {
		panic("region: RegisterBackend with an empty name or a nil factory")
	}
	backends.mu.Lock()
	defer backends.mu.Unlock()
	if _, dup := backends.m[name]; dup {
		panic(fmt.Sprintf("region: RegisterBackend called twice for backend %q", name))
	}
	if backends.m == nil {
		backends.m = make(map[string]BackendFactory)
	}
	backends.m[name] = factory
}

// RegisteredBackends returns the names of the registered backends, sorted.
func RegisteredBackends() []string {
	backends.mu.RLock()
	defer backends.mu.RUnlock()
	names := make([]string, 0, len(backends.m))
	for n := range backends.m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// The region options of a configuration, by key (after the prefix).
const (
	cfgBackend        = "backend"
	cfgName           = "name"
	cfgExpiration     = "expiration"
	cfgStaleTTL       = "stale_ttl"
	cfgLease          = "lease"
	cfgWaitTimeout    = "wait_timeout"
	cfgWaitFallback   = "wait_fallback"
	cfgCreatorTimeout = "creator_timeout"
	cfgAsync          = "async_regeneration"
	cfgKeyMangler     = "key_mangler"
	cfgCodec          = "codec"
)

var regionKeys = []string{cfgBackend, cfgName, cfgExpiration, cfgStaleTTL, cfgLease, cfgWaitTimeout,
	cfgWaitFallback, cfgCreatorTimeout, cfgAsync, cfgKeyMangler, cfgCodec}

// FromConfig makes a region from the keys of cfg that begin with prefix
// (others are ignored, so one map may configure several regions), as
// dogpile's configure_from_config does:
//
//	cache.backend=redis
//	cache.url=redis://127.0.0.1:6379/0
//	cache.expiration=10m
//
// <prefix>backend names the backend (RegisterBackend; import its package
// first). The region's options are, after the prefix, with durations in
// time.ParseDuration's syntax ("90s", "10m", "1h30m"):
//
//	name                the region's name (WithName; default "default")
//	expiration          WithExpiration; 0 or absent: values never expire
//	stale_ttl           WithStaleTTL
//	lease               WithInvalidationLease
//	wait_timeout        WithWaitTimeout
//	wait_fallback       false: WithoutWaitFallback (default true)
//	creator_timeout     WithCreatorTimeout
//	async_regeneration  WithAsyncRegeneration(n) for n > 0; 0: off
//	key_mangler         hash (HashMangler), length:N (LengthMangler(N)) or none
//	codec               msgpack (the default) or json
//
// Every other key under the prefix is an argument of the backend, given to
// its factory without the prefix (see each backend's package for its
// arguments). An unknown backend, a value that cannot be read or a key that
// neither the region nor the backend knows is an error matching ErrConfig
// (errors.Is), a *ConfigError naming the key (errors.As).
//
// The region owns the backend FromConfig made: its Close closes the backend
// too, when the backend has a Close method.
func FromConfig(cfg map[string]string, prefix string) (*Region, error) {
	own := make(map[string]string)
	args := make(map[string]string)
	for k, v := range cfg {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		if slices.Contains(regionKeys, rest) {
			own[rest] = v
		} else {
			args[rest] = v
		}
	}
	name, ok := own[cfgBackend]
	if !ok {
		return nil, &ConfigError{Key: prefix + cfgBackend, Err: errors.New("missing: name the backend")}
	}
	backends.mu.RLock()
	factory := backends.m[name]
	backends.mu.RUnlock()
	if factory == nil {
		return nil, &ConfigError{Key: prefix + cfgBackend, Value: name, Err: fmt.Errorf(
			"no backend of that name is registered (registered: %s); import the backend's package",
			strings.Join(RegisteredBackends(), ", "))}
	}
	opts, err := regionOptions(own)
	if err != nil {
		return nil, prefixed(err, prefix)
	}
	b, err := factory(args)
	if err != nil {
		err = prefixed(err, prefix)
		if !errors.Is(err, ErrConfig) {
			err = fmt.Errorf("region: config: backend %q: %w", name, err)
		}
		return nil, err
	}
	r := New(b, opts...)
	r.ownsBackend = true
	return r, nil
}

// prefixed returns err with prefix before the key of its *ConfigError, if
// it has one: a copy, so that an error a factory returns more than once is
// never changed.
func prefixed(err error, prefix string) error {
	var ce *ConfigError
	if !errors.As(err, &ce) {
		return err
	}
	c := *ce
	c.Key = prefix + ce.Key
	if err != error(ce) {
		c.Err = err // the factory's whole message, around the key's
	}
	return &c
}

// regionOptions reads the region's options from their keys.
func regionOptions(own map[string]string) ([]Option, error) {
	a := ConfigArgs(own)
	var opts []Option
	if n, ok := a.lookup(cfgName); ok {
		opts = append(opts, WithName(n))
	}
	durations := []struct {
		key      string
		opt      func(time.Duration) Option
		positive bool // zero is not allowed
	}{
		{cfgExpiration, WithExpiration, false}, {cfgStaleTTL, WithStaleTTL, false},
		{cfgLease, WithInvalidationLease, true}, {cfgWaitTimeout, WithWaitTimeout, false},
		{cfgCreatorTimeout, WithCreatorTimeout, false},
	}
	for _, d := range durations {
		if _, ok := a.lookup(d.key); !ok {
			continue
		}
		v, err := a.Duration(d.key, 0)
		if err != nil {
			return nil, err
		}
		if v == 0 && d.positive {
			return nil, a.bad(d.key, errors.New("must be positive"))
		}
		opts = append(opts, d.opt(v))
	}
	fallback, err := a.Bool(cfgWaitFallback, true)
	if err != nil {
		return nil, err
	}
	if !fallback {
		opts = append(opts, WithoutWaitFallback())
	}
	n, err := a.Int(cfgAsync, 0)
	switch {
	case err != nil:
		return nil, err
	case n < 0:
		return nil, a.bad(cfgAsync, errors.New("must be 0 (off) or a number of concurrent regenerations"))
	case n > 0:
		opts = append(opts, WithAsyncRegeneration(n))
	}
	if m, ok := a.lookup(cfgKeyMangler); ok {
		o, err := manglerOption(m)
		if err != nil {
			return nil, a.bad(cfgKeyMangler, err)
		}
		if o != nil {
			opts = append(opts, o)
		}
	}
	switch c, _ := a.lookup(cfgCodec); c {
	case "", "msgpack":
	case "json":
		opts = append(opts, WithCodec(JSONCodec{}))
	default:
		return nil, a.bad(cfgCodec, errors.New("unknown codec: msgpack or json"))
	}
	return opts, nil
}

// manglerOption returns the key mangler option a key_mangler value names,
// nil for none.
func manglerOption(m string) (Option, error) {
	switch {
	case m == "" || m == "none":
		return nil, nil
	case m == "hash":
		return WithKeyMangler(HashMangler), nil
	case strings.HasPrefix(m, "length:"):
		n, err := strconv.Atoi(strings.TrimPrefix(m, "length:"))
		if err != nil || n < 1 {
			return nil, errors.New("length:N needs a positive number of bytes")
		}
		return WithKeyMangler(LengthMangler(n)), nil
	}
	return nil, errors.New("unknown key mangler: hash, length:N or none")
}

// ConfigArgs reads a backend's arguments in a BackendFactory: typed values
// with defaults, each error a *ConfigError naming its key. Unknown reports
// the keys the factory did not ask for, which are typos or arguments of
// another backend:
//
//	func factory(cfg map[string]string) (region.Backend, error) {
//		a := region.ConfigArgs(cfg)
//		size, err := a.Bytes("max_bytes", 64<<20)
//		if err != nil {
//			return nil, err
//		}
//		if err := a.Unknown("max_bytes"); err != nil {
//			return nil, err
//		}
//		return newBackend(size), nil
//	}
type ConfigArgs map[string]string

// lookup returns the value of key and whether it is set (an empty value
// counts as unset).
func (a ConfigArgs) lookup(key string) (string, bool) {
	v, ok := a[key]
	return v, ok && v != ""
}

func (a ConfigArgs) bad(key string, err error) error {
	return &ConfigError{Key: key, Value: a[key], Err: err}
}

// String returns the value of key, def when it is unset or empty.
func (a ConfigArgs) String(key, def string) string {
	if v, ok := a.lookup(key); ok {
		return v
	}
	return def
}

// Duration returns the value of key read by time.ParseDuration, def when
// it is unset or empty. A negative duration is an error.
func (a ConfigArgs) Duration(key string, def time.Duration) (time.Duration, error) {
	v, ok := a.lookup(key)
	if !ok {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, a.bad(key, errors.New("not a duration (examples: 500ms, 10m, 1h30m)"))
	}
	if d < 0 {
		return 0, a.bad(key, errors.New("negative duration"))
	}
	return d, nil
}

// Int returns the value of key as a decimal integer, def when it is unset
// or empty.
func (a ConfigArgs) Int(key string, def int) (int, error) {
	v, ok := a.lookup(key)
	if !ok {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, a.bad(key, errors.New("not an integer"))
	}
	return n, nil
}

// Bool returns the value of key as strconv.ParseBool reads it (true,
// false, 1, 0, ...), def when it is unset or empty.
func (a ConfigArgs) Bool(key string, def bool) (bool, error) {
	v, ok := a.lookup(key)
	if !ok {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, a.bad(key, errors.New("not a boolean (true or false)"))
	}
	return b, nil
}

// Bytes returns the value of key as a positive number of bytes, def when
// it is unset or empty: a decimal integer, optionally followed by KiB, MiB
// or GiB.
func (a ConfigArgs) Bytes(key string, def int64) (int64, error) {
	v, ok := a.lookup(key)
	if !ok {
		return def, nil
	}
	num, mult := v, int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if s, ok := strings.CutSuffix(v, u.suffix); ok {
			num, mult = strings.TrimSpace(s), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 1 || n > (1<<63-1)/mult {
		return 0, a.bad(key, errors.New("not a positive number of bytes (examples: 1048576, 64MiB, 1GiB)"))
	}
	return n * mult, nil
}

// List returns the value of key split at commas, each item trimmed of
// spaces and the empty ones dropped; def when it is unset or empty.
func (a ConfigArgs) List(key string, def []string) []string {
	v, ok := a.lookup(key)
	if !ok {
		return def
	}
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Unknown returns a *ConfigError naming the first key (in sorted order) of
// the arguments that is not among known, or nil when there is none.
func (a ConfigArgs) Unknown(known ...string) error {
	var extra []string
	for k := range a {
		if !slices.Contains(known, k) {
			extra = append(extra, k)
		}
	}
	if len(extra) == 0 {
		return nil
	}
	slices.Sort(extra)
	msg := "unknown key"
	if len(known) > 0 {
		sorted := slices.Clone(known)
		slices.Sort(sorted)
		msg += " (known: " + strings.Join(sorted, ", ") + ")"
	}
	return a.bad(extra[0], errors.New(msg))
}

// closeBackend closes the backend of a region that owns it.
func (r *Region) closeBackend() error {
	if !r.ownsBackend {
		return nil
	}
	c, ok := r.backend.(io.Closer)
	if !ok {
		return nil
	}
	if err := c.Close(); err != nil {
		return fmt.Errorf("region %s: close the backend: %w", r.name, err)
	}
	return nil
}
