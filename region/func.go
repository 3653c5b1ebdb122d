package region

import (
	"context"
	"fmt"
	"reflect"
	"time"
)

// Function caching, dogpile's cache_on_arguments and
// cache_multi_on_arguments: Func wraps a function of one argument so that
// its results are cached in a region under a key made from the argument,
// with the lock and stale rules of GetOrCreate; FuncMulti does the same for
// a function that looks many arguments up at once. Several parameters are
// one argument of a struct type.

// FuncOption configures a Func or a FuncMulti: WithNamespace,
// WithKeyGenerator, WithExpirationFunc, WithArgTags, or any CallOption
// (WithTags, ExpireAfter, ShouldCache, IgnoreExpiration, ...), which then
// applies to every call of the function.
type FuncOption interface {
	applyFunc(*funcConfig)
}

// applyFunc makes a CallOption a FuncOption: it applies to every call.
func (o CallOption) applyFunc(c *funcConfig) { c.call = append(c.call, o) }

// funcOption is a FuncOption of Func's own.
type funcOption func(*funcConfig)

func (o funcOption) applyFunc(c *funcConfig) { o(c) }

// funcConfig is the options of a Func or a FuncMulti, as given.
type funcConfig struct {
	namespace string
	keyGen    any // func(name string, arg A) (string, error), checked against A
	expire    func() time.Duration
	argTags   any // func(arg A) []string, checked against A
	call      []CallOption
}

// WithNamespace sets a namespace, which the default keys carry after the
// function's name (dogpile's namespace): functions of one name in different
// namespaces never share entries.
func WithNamespace(namespace string) FuncOption {
	return funcOption(func(c *funcConfig) { c.namespace = namespace })
}

// WithKeyGenerator replaces the default keys (see FuncKeyVersion) with those
// gen makes (dogpile's function_key_generator): gen is given the function's
// name, followed by '#' and the namespace when it has one, and the
// argument. gen must give different arguments different keys, and should
// make keys that no other function of the region makes; an error from it
// is returned by the call. A (the argument's type) must be the function's:
// Func and FuncMulti panic otherwise.
func WithKeyGenerator[A any](gen func(name string, arg A) (string, error)) FuncOption {
	return funcOption(func(c *funcConfig) { c.keyGen = gen })
}

// WithExpirationFunc computes the expiration of each call (dogpile's
// callable expiration_time): expire is called on every call, and its result
// applies as ExpireAfter's would (NeverExpire for values that never go
// stale).
func WithExpirationFunc(expire func() time.Duration) FuncOption {
	return funcOption(func(c *funcConfig) { c.expire = expire })
}

// WithArgTags gives each argument's value tags of its own (in addition to
// those of WithTags): InvalidateTags on one of them invalidates the values
// of the arguments it was given for, as WithKeyTags does. A must be the
// function's argument type: Func and FuncMulti panic otherwise.
func WithArgTags[A any](tags func(arg A) []string) FuncOption {
	return funcOption(func(c *funcConfig) { c.argTags = tags })
}

// funcBase is what a Func and a FuncMulti share: the region, the keys and
// the options of every call.
type funcBase[A any] struct {
	r    *Region
	name string // the name and namespace, for errors and key generators

	// The default keys: prefix, then the argument as enc appends it.
	prefix string
	enc    argEncoder[A]
	// gen makes the keys instead, when set (WithKeyGenerator).
	gen func(name string, arg A) (string, error)

	co      *callOptions // every call's options; read-only
	expire  func() time.Duration
	argTags func(arg A) []string
}

func newFuncBase[A any](r *Region, name string, opts []FuncOption) funcBase[A] {
	var c funcConfig
	for _, o := range opts {
		o.applyFunc(&c)
	}
	full := name
	if c.namespace != "" {
		full += "#" + c.namespace
	}
	f := funcBase[A]{r: r, name: full, prefix: funcKeyPrefix(name, c.namespace), enc: newArgEncoder[A](), expire: c.expire, co: noOptions}
	if c.keyGen != nil {
		gen, ok := c.keyGen.(func(string, A) (string, error))
		if !ok {
			panic(fmt.Sprintf("region: func %s: WithKeyGenerator for %T, not for arguments of type %s", full, c.keyGen, reflect.TypeFor[A]()))
		}
		f.gen = gen
	}
	if c.argTags != nil {
		tags, ok := c.argTags.(func(A) []string)
		if !ok {
			panic(fmt.Sprintf("region: func %s: WithArgTags for %T, not for arguments of type %s", full, c.argTags, reflect.TypeFor[A]()))
		}
		f.argTags = tags
	}
	if len(c.call) > 0 {
		f.co = collect(c.call)
	}
	return f
}

// Key returns the key under which the value for arg is stored (the
// region's caller key: the key mangler and the region's prefix apply to it
// as to any other).
func (f *funcBase[A]) Key(arg A) (string, error) {
	if f.gen != nil {
		k, err := f.gen(f.name, arg)
		if err != nil {
			return "", fmt.Errorf("region %s: func %s: key: %w", f.r.name, f.name, err)
		}
		return k, nil
	}
	b, err := f.appendKey(make([]byte, 0, len(f.prefix)+16), arg)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// appendKey appends the default key of arg to b.
func (f *funcBase[A]) appendKey(b []byte, arg A) ([]byte, error) {
	b, err := f.enc(append(b, f.prefix...), arg)
	if err != nil {
		return b, fmt.Errorf("region %s: func %s: key: %w", f.r.name, f.name, err)
	}
	return b, nil
}

// keys returns the key of each of args.
func (f *funcBase[A]) keys(args []A) ([]string, error) {
	keys := make([]string, len(args))
	for i := range args {
		k, err := f.Key(args[i])
		if err != nil {
			return nil, err
		}
		keys[i] = k
	}
	return keys, nil
}

// options returns the options of a call: every call's, with the expiration
// of WithExpirationFunc and, for keys (the call's, those of args), the tags
// of WithArgTags. A call without either shares f.co.
func (f *funcBase[A]) options(args []A, keys []string) *callOptions {
	if f.expire == nil && f.argTags == nil {
		return f.co
	}
	co := *f.co
	if f.expire != nil {
		co.expiration, co.expirationSet = f.expire(), true
	}
	if f.argTags != nil {
		co.keyTags = make(map[string][]string, len(keys))
		for i, k := range keys {
			co.keyTags[k] = f.argTags(args[i])
		}
	}
	return &co
}

// CachedFunc is a function whose results are cached in a region, made by
// Func. It is safe for concurrent use.
type CachedFunc[A, V any] struct {
	funcBase[A]
	fn func(ctx context.Context, arg A) (V, error)
}

// Func caches the results of fn in r, by argument (dogpile's
// cache_on_arguments). name names the function in its keys: give each
// function its own (a FuncMulti of the same name, argument and value types
// shares the Func's entries, which is what it is for). Several parameters
// are one argument of a struct type:
//
//	type userQuery struct {
//		Org  int
//		Name string
//	}
//	findUser := region.Func(r, "users.find", func(ctx context.Context, q userQuery) (User, error) {
//		return db.FindUser(ctx, q.Org, q.Name)
//	}, region.WithTags("users"))
//	u, err := findUser.Get(ctx, userQuery{Org: 1, Name: "alice"})
//
// The key of an argument is typed (see FuncKeyVersion) unless
// WithKeyGenerator replaces it; the options are listed on FuncOption.
func Func[A, V any](r *Region, name string, fn func(ctx context.Context, arg A) (V, error), opts ...FuncOption) *CachedFunc[A, V] {
	return &CachedFunc[A, V]{funcBase: newFuncBase[A](r, name, opts), fn: fn}
}

// Get returns fn's result for arg from the region, calling fn when there
// is no usable value, with the lock and stale rules of GetOrCreate (one
// call of fn per key at a time; a stale value served to all callers but
// the one that regenerates it), and GetOrCreate's errors, panics and
// sharing of values. An error making the key is returned before anything
// else is done.
func (f *CachedFunc[A, V]) Get(ctx context.Context, arg A) (V, error) {
	r := f.r
	if f.gen != nil || f.argTags != nil || !r.local || r.mangle != nil {
		key, err := f.Key(arg)
		if err != nil {
			var zero V
			return zero, err
		}
		return f.getKey(ctx, key, arg, f.options([]A{arg}, []string{key}))
	}
	// The hit path of a local backend without a key mangler: the backend
	// key is built in recycled memory, as GetOrCreate builds it, and the
	// caller's key is made only on a miss.
	co := f.options(nil, nil)
	var v V
	sc := hitScratches.Get().(*hitScratch)
	b, err := f.appendKey(append(sc.key[:0], r.entryPrefix...), arg)
	sc.key = b
	if err != nil {
		hitScratches.Put(sc)
		return v, err
	}
	hit, s, err := r.readScratch(ctx, sc, co, func(p []byte) error { return r.codec.Unmarshal(p, &v) })
	if hit {
		hitScratches.Put(sc)
		return v, nil
	}
	key := string(sc.key[len(r.entryPrefix):])
	hitScratches.Put(sc)
	return createOne(ctx, r, key, f.creator(arg), co, &s, err)
}

// getKey is Get of the value under key.
func (f *CachedFunc[A, V]) getKey(ctx context.Context, key string, arg A, co *callOptions) (V, error) {
	if co.keyTags != nil {
		// The argument's own tags are read as FuncMulti reads them, so
		// that the two share entries.
		l := &valueLoader[V]{create: f.creator(arg)}
		err := f.r.loadWith(ctx, []string{key}, l, co)
		return l.v, err
	}
	var v V
	hit, s, err := f.r.readOne(ctx, key, co, func(p []byte) error { return f.r.codec.Unmarshal(p, &v) })
	if hit {
		return v, nil
	}
	return createOne(ctx, f.r, key, f.creator(arg), co, &s, err)
}

// creator returns the creator of arg's value.
func (f *CachedFunc[A, V]) creator(arg A) func(ctx context.Context) (V, error) {
	return func(ctx context.Context) (V, error) { return f.fn(ctx, arg) }
}

// Peek returns the fresh value stored for arg, if there is one, without
// calling fn (dogpile's get on the decorated function), as Region.Get
// does; the function's options apply (its expiration among them).
func (f *CachedFunc[A, V]) Peek(ctx context.Context, arg A) (V, bool, error) {
	var v V
	key, err := f.Key(arg)
	if err != nil {
		return v, false, err
	}
	decode := func(p []byte) error { return f.r.codec.Unmarshal(p, &v) }
	var found bool
	if co := f.options([]A{arg}, []string{key}); co.keyTags != nil {
		err = f.r.peekMulti(ctx, []string{key}, func(_ string, p []byte) error {
			err := decode(p)
			found = err == nil
			return err
		}, co)
	} else {
		found, err = f.r.peek(ctx, key, decode, co)
	}
	if !found {
		var zero V
		v = zero
	}
	return v, found, err
}

// Set stores value as the result for arg, as Region.Set does.
func (f *CachedFunc[A, V]) Set(ctx context.Context, value V, arg A) error {
	key, err := f.Key(arg)
	if err != nil {
		return err
	}
	return f.r.setMulti(ctx, map[string]any{key: value}, f.options([]A{arg}, []string{key}))
}

// Invalidate removes the value stored for arg: the next Get calls fn.
func (f *CachedFunc[A, V]) Invalidate(ctx context.Context, arg A) error {
	key, err := f.Key(arg)
	if err != nil {
		return err
	}
	return f.r.Delete(ctx, key)
}

// Refresh calls fn for arg, on ctx, and stores its result whatever the
// region holds (dogpile's refresh), unless ShouldCache refuses it. The
// value is stamped with the tags as they were before fn ran, so an
// invalidation made while it ran is not lost. Its result is returned even
// when it could not be stored, with the backend's error.
func (f *CachedFunc[A, V]) Refresh(ctx context.Context, arg A) (V, error) {
	var zero V
	key, err := f.Key(arg)
	if err != nil {
		return zero, err
	}
	keys := []string{key}
	co := f.options([]A{arg}, keys)
	var (
		v     V
		fnErr error
	)
	err = f.r.refresh(ctx, keys, co, func(ctx context.Context) (map[string]any, error) {
		made, err := f.fn(ctx, arg)
		if err != nil {
			fnErr = err
			return nil, err
		}
		v = made
		return map[string]any{key: made}, nil
	})
	if fnErr != nil {
		return zero, fnErr
	}
	return v, err
}

// Original returns fn, the function without the cache.
func (f *CachedFunc[A, V]) Original() func(ctx context.Context, arg A) (V, error) { return f.fn }

// CachedMultiFunc is a function of many arguments at once whose results are
// cached in a region, by argument, made by FuncMulti. It is safe for
// concurrent use.
type CachedMultiFunc[A comparable, V any] struct {
	funcBase[A]
	fn func(ctx context.Context, args []A) (map[A]V, error)
}

// FuncMulti caches the results of fn in r, by argument (dogpile's
// cache_multi_on_arguments with asdict): fn looks many arguments up at once
// and returns the value of each it found. Each argument's value has its own
// key, the one a Func of the same name and options gives it, so the two
// share their entries. Arguments that fn leaves out of its result are not
// cached, and are absent from Get's result.
func FuncMulti[A comparable, V any](r *Region, name string, fn func(ctx context.Context, args []A) (map[A]V, error), opts ...FuncOption) *CachedMultiFunc[A, V] {
	return &CachedMultiFunc[A, V]{funcBase: newFuncBase[A](r, name, opts), fn: fn}
}

// Get returns the value of each of args, reading them all in one backend
// round trip and calling fn once for those without a usable value (in the
// order given, without duplicates), with GetOrCreateMulti's lock and stale
// rules per key: concurrent calls with overlapping arguments make each
// value once.
func (f *CachedMultiFunc[A, V]) Get(ctx context.Context, args ...A) (map[A]V, error) {
	keys, err := f.keys(args)
	if err != nil {
		return nil, err
	}
	l := &multiLoader[A, V]{fn: f.fn, args: make(map[string]A, len(args)), out: make(map[A]V, len(args))}
	for i, k := range keys {
		l.args[k] = args[i]
	}
	if err := f.r.loadWith(ctx, keys, l, f.options(args, keys)); err != nil {
		return nil, err
	}
	return l.out, nil
}

// Peek returns the fresh values stored for args, without calling fn, as
// GetMulti does.
func (f *CachedMultiFunc[A, V]) Peek(ctx context.Context, args ...A) (map[A]V, error) {
	keys, err := f.keys(args)
	if err != nil {
		return nil, err
	}
	byKey := make(map[string]A, len(args))
	for i, k := range keys {
		byKey[k] = args[i]
	}
	out := make(map[A]V, len(args))
	err = f.r.peekMulti(ctx, keys, func(key string, payload []byte) error {
		var v V
		if err := f.r.codec.Unmarshal(payload, &v); err != nil {
			return err
		}
		out[byKey[key]] = v
		return nil
	}, f.options(args, keys))
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Set stores each of values as the result for its argument, as
// Region.SetMulti does.
func (f *CachedMultiFunc[A, V]) Set(ctx context.Context, values map[A]V) error {
	args := make([]A, 0, len(values))
	for a := range values {
		args = append(args, a)
	}
	keys, err := f.keys(args)
	if err != nil {
		return err
	}
	items := make(map[string]any, len(args))
	for i, k := range keys {
		items[k] = values[args[i]]
	}
	return f.r.setMulti(ctx, items, f.options(args, keys))
}

// Invalidate removes the values stored for args, in one backend call.
func (f *CachedMultiFunc[A, V]) Invalidate(ctx context.Context, args ...A) error {
	keys, err := f.keys(args)
	if err != nil {
		return err
	}
	return f.r.DeleteMulti(ctx, keys...)
}

// Refresh calls fn once for args (without duplicates), on ctx, and stores
// the values it returns whatever the region holds, as CachedFunc.Refresh
// does, in one backend write. It returns them even when they could not be
// stored, with the backend's error.
func (f *CachedMultiFunc[A, V]) Refresh(ctx context.Context, args ...A) (map[A]V, error) {
	keys, err := f.keys(args)
	if err != nil {
		return nil, err
	}
	// Without duplicates, in the order given.
	seen := make(map[string]bool, len(keys))
	var uargs []A
	var ukeys []string
	for i, k := range keys {
		if !seen[k] {
			seen[k] = true
			uargs, ukeys = append(uargs, args[i]), append(ukeys, k)
		}
	}
	var (
		out   map[A]V
		fnErr error
	)
	err = f.r.refresh(ctx, ukeys, f.options(uargs, ukeys), func(ctx context.Context) (map[string]any, error) {
		made, err := f.fn(ctx, uargs)
		if err != nil {
			fnErr = err
			return nil, err
		}
		out = make(map[A]V, len(made))
		vals := make(map[string]any, len(made))
		for i, k := range ukeys {
			if v, ok := made[uargs[i]]; ok {
				out[uargs[i]], vals[k] = v, v
			}
		}
		return vals, nil
	})
	if fnErr != nil {
		return nil, fnErr
	}
	return out, err
}

// Original returns fn, the function without the cache.
func (f *CachedMultiFunc[A, V]) Original() func(ctx context.Context, args []A) (map[A]V, error) {
	return f.fn
}

// multiLoader is the Loader of CachedMultiFunc.Get.
type multiLoader[A comparable, V any] struct {
	fn   func(ctx context.Context, args []A) (map[A]V, error) // called from the creator's goroutine
	args map[string]A                                         // each key's argument; read-only
	out  map[A]V                                              // written only by the caller's goroutine
}

func (l *multiLoader[A, V]) Create(ctx context.Context, keys []string) (map[string]any, error) {
	args := make([]A, len(keys))
	for i, k := range keys {
		args[i] = l.args[k]
	}
	m, err := l.fn(ctx, args)
	if err != nil {
		return nil, err
	}
	out := make(map[string]any, len(m))
	for i, k := range keys {
		if v, ok := m[args[i]]; ok {
			out[k] = v
		}
	}
	return out, nil
}

func (l *multiLoader[A, V]) Decode(key string, c Codec, payload []byte) error {
	var v V
	if err := c.Unmarshal(payload, &v); err != nil {
		return err
	}
	l.out[l.args[key]] = v
	return nil
}

func (l *multiLoader[A, V]) Adopt(key string, v any, _ bool) bool {
	if t, ok := v.(V); ok {
		l.out[l.args[key]] = t
	}
	return true
}

// refresh makes the values of keys with create and stores them, whatever
// the region holds: it reads what they are stamped with (prepareWrite)
// before create runs, so that an invalidation made while it ran makes them
// misses. Values that ShouldCache refuses are not stored. A backend error is
// returned after create ran, and nothing is stored then.
func (r *Region) refresh(ctx context.Context, keys []string, co *callOptions, create func(ctx context.Context) (map[string]any, error)) error {
	bkeys := r.backendKeys(keys, co)
	s, b, readErr := r.prepareWrite(ctx, bkeys, co)
	r.stats.regenerations.Add(1)
	vals, err := runCreator(ctx, r, keys, co, create)
	if err != nil {
		return err
	}
	if readErr != nil {
		return fmt.Errorf("region %s: refresh %d keys: %w", r.name, len(keys), readErr)
	}
	payloads := make([][]byte, len(keys))
	for i, k := range keys {
		v, ok := vals[k]
		if !ok {
			continue
		}
		if co.shouldCache != nil && !co.shouldCache(v) {
			r.notStored(ctx, bkeys[i], co, ReasonShouldCache)
			continue
		}
		p, err := r.codec.Marshal(v)
		if err != nil {
			r.notStored(ctx, bkeys[i], co, ReasonUnencodable)
			continue
		}
		payloads[i] = p
	}
	if err := r.writeAll(ctx, bkeys, payloads, &s, co, b); err != nil {
		return fmt.Errorf("region %s: refresh %d keys: %w", r.name, len(keys), err)
	}
	return nil
}
