package region

import (
	"context"
	"sync"
	"unsafe"
)

// noOptions is shared by calls without options; it is never written.
var noOptions = &callOptions{}

// GetOrCreate returns the value stored under key, making it with create when
// there is no usable value, by the rules of the dogpile lock (see Region):
// a fresh value is returned at once; for an expired one, one caller runs
// create while the others get the stale value; for a missing one, one caller
// runs create and the others wait for its result.
//
// Errors from create are returned to every caller that waited on that run,
// and nothing is cached. A panic in create is raised again in the caller
// whose run it was, as a *PanicError; the callers that waited on that run
// get an error holding it (see PanicError). Backend errors are never returned: they cost a miss.
// A value that cannot be decoded is a miss, counted in Stats. A value that
// cannot be encoded is not stored; the callers that waited for it are all
// given that same value (copy it before changing it if T holds pointers,
// slices or maps).
func GetOrCreate[T any](ctx context.Context, r *Region, key string, create func(ctx context.Context) (T, error), opts ...CallOption) (T, error) {
	co := noOptions
	if len(opts) > 0 {
		co = collect(opts)
	}
	var v T
	hit, s, err := r.readOne(ctx, key, co, func(b []byte) error { return r.codec.Unmarshal(b, &v) })
	if hit {
		return v, nil
	}
	return createOne(ctx, r, key, create, co, &s, err)
}

// createOne is GetOrCreate after a read of key that found no fresh value:
// s is what the read saw, readErr its error.
func createOne[T any](ctx context.Context, r *Region, key string, create func(ctx context.Context) (T, error), co *callOptions, s *snapshot, readErr error) (T, error) {
	if readErr != nil {
		r.failed(ctx, OpRead, key, readErr)
	}
	l := &valueLoader[T]{create: create}
	err := r.load(ctx, callKeys{[]string{key}, []string{r.entryKey(key)}}, l, co, s, nil, 0)
	return l.v, err
}

// readOne is the hit path of one key: it reads the key and, when its value
// is fresh and decode accepts it, counts a hit. Otherwise it returns the
// snapshot it read, for the dogpile lock to go on from.
func (r *Region) readOne(ctx context.Context, key string, co *callOptions, decode func([]byte) error) (bool, snapshot, error) {
	if r.local {
		// A backend private to the process is called synchronously and
		// keeps no key: the key can be built in recycled memory.
		sc := hitScratches.Get().(*hitScratch)
		sc.key = append(append(sc.key[:0], r.entryPrefix...), r.mangled(key)...)
		hit, s, err := r.readScratch(ctx, sc, co, decode)
		hitScratches.Put(sc)
		return hit, s, err
	}
	// Room for the invalidation record and the tag keys, which read
	// appends.
	keys := make([]string, 1, 1+recordKeys+2*len(co.tagList()))
	keys[0] = r.entryKey(key)
	s, err := r.read(ctx, keys, co)
	return r.hitOf(&s, err, co, decode), s, err
}

// readScratch is readOne over a local backend of the backend key built in
// sc.key. The caller puts sc back in hitScratches.
func (r *Region) readScratch(ctx context.Context, sc *hitScratch, co *callOptions, decode func([]byte) error) (bool, snapshot, error) {
	keys := sc.keys[:1]
	keys[0] = unsafe.String(unsafe.SliceData(sc.key), len(sc.key))
	s, err := r.read(ctx, keys, co)
	clear(sc.keys[:])
	return r.hitOf(&s, err, co, decode), s, err
}

// hitOf reports whether s, a read of one entry that failed with err or
// not, found it fresh and decode accepted it, and then counts a hit.
func (r *Region) hitOf(s *snapshot, err error, co *callOptions, decode func([]byte) error) bool {
	if err != nil {
		return false
	}
	var env envelope
	if r.classify(s.raw[0], s, 0, co, &env) == fresh && decode(env.payload) == nil {
		r.stats.hits.Add(1)
		return true
	}
	// The lock's path reclassifies s and counts a malformed entry, once.
	return false
}

// hitScratch is the memory a hit on a process-local backend builds its key
// and key list in. It belongs to one goroutine between its Get from
// hitScratches and its Put.
type hitScratch struct {
	key  []byte
	keys [8]string // the entry, then what read appends: tag keys
}

var hitScratches = sync.Pool{New: func() any { return new(hitScratch) }}

// valueLoader is the Loader of GetOrCreate.
type valueLoader[T any] struct {
	create func(ctx context.Context) (T, error) // called from the creator's goroutine
	v      T                                    // written only by the caller's goroutine
}

func (l *valueLoader[T]) Create(ctx context.Context, keys []string) (map[string]any, error) {
	v, err := l.create(ctx)
	if err != nil {
		return nil, err
	}
	return map[string]any{keys[0]: v}, nil
}

func (l *valueLoader[T]) Decode(_ string, c Codec, payload []byte) error {
	// Straight into the result; a failed decode leaves the zero value, not
	// half a value.
	var zero T
	l.v = zero
	if err := c.Unmarshal(payload, &l.v); err != nil {
		l.v = zero
		return err
	}
	return nil
}

// Adopt takes v as it is: callers that waited for a value that could not
// be encoded share it (see GetOrCreate).
func (l *valueLoader[T]) Adopt(_ string, v any, _ bool) bool {
	l.v, _ = v.(T)
	return true
}

// Loader makes values and fills the caller's destinations. It is the
// non-generic form of GetOrCreate and GetOrCreateMulti, for callers that know
// their types only at run time (the GORM plugin is one).
//
// Each call of Load has a Loader of its own. A fresh stored value is given
// to it through Decode. For keys without one, one caller's Create makes the
// values (one Create at a time per key in this process, and across
// processes where the backend has a Mutex), and every caller waiting for a
// key is handed the result once:
//
//   - The caller whose own Create made the value is given it through Adopt
//     with own true, whether or not it could be encoded. It always takes it:
//     Adopt's result is ignored.
//   - Every other caller decodes the stored payload through Decode, as a hit
//     does, so that callers share no memory; so does the leading caller when
//     its re-read found the value stored by someone else.
//   - A value that could not be encoded has no payload: every other caller
//     is given the very value Create returned, through Adopt with own false.
//     An Adopt that must not share memory copies it, or returns false to
//     have its caller make a value of its own with Create, outside the lock.
//
// A caller whose Decode fails, or whose read of the region is newer than
// what the value was made from (a write committed while it was being made),
// looks the key up again. A key that Create leaves out of its result is
// handed to no one.
type Loader interface {
	// Create makes the values of keys. It runs in a goroutine of its own on a
	// context detached from the caller's cancellation. Keys missing from the
	// result are not cached.
	Create(ctx context.Context, keys []string) (map[string]any, error)
	// Decode fills the caller's destination for key from a stored payload.
	// An error makes the entry a miss: it is counted and regenerated.
	Decode(key string, c Codec, payload []byte) error
	// Adopt fills the caller's destination for key with a value made by
	// Create, and reports whether it did; own tells whether this caller's
	// own Create made it. Which caller is given what is stated on Loader.
	Adopt(key string, v any, own bool) bool
}

// Payloader is implemented by values a Loader creates that encode
// themselves: the region stores the bytes Payload returns instead of running
// the codec, and hands them to Loader.Decode as they are. An error means the
// value is not stored (it still reaches the callers through Adopt); wrap
// ErrPartial or ErrUnencodable in it to say why (Stats.NotStoredBy).
type Payloader interface {
	Payload() ([]byte, error)
}

// Load is GetOrCreateMulti for a Loader: it fills the destinations of keys
// from the region, running l.Create for the ones that have no usable value.
// Values that the creator did not return are left untouched.
func (r *Region) Load(ctx context.Context, keys []string, l Loader, opts ...CallOption) error {
	co := noOptions
	if len(opts) > 0 {
		co = collect(opts)
	}
	return r.loadWith(ctx, keys, l, co)
}

// loadWith is Load with its options collected. It gives co the keys' own
// tags (backendKeys), so co must be the call's own when it has WithKeyTags.
func (r *Region) loadWith(ctx context.Context, keys []string, l Loader, co *callOptions) error {
	if len(keys) == 1 && co.keyTags == nil {
		hit, s, err := r.readOne(ctx, keys[0], co, func(b []byte) error { return l.Decode(keys[0], r.codec, b) })
		if hit {
			report(l, keys[0], OutcomeHit)
			return nil
		}
		if err != nil {
			r.failed(ctx, OpRead, keys[0], err)
		}
		return r.load(ctx, callKeys{keys, []string{r.entryKey(keys[0])}}, l, co, &s, nil, 0)
	}
	bkeys := r.backendKeys(keys, co)
	return r.load(ctx, callKeys{keys, bkeys}, l, co, nil, nil, 0)
}

// backendKeys returns the backend key of each of keys and, when the call
// has WithKeyTags, gives co the keys' own tags by backend key, before the
// call's first read.
func (r *Region) backendKeys(keys []string, co *callOptions) []string {
	bkeys := make([]string, len(keys))
	for i, k := range keys {
		bkeys[i] = r.entryKey(k)
	}
	if co.keyTags != nil {
		co.bkeyTags = make(map[string][]string, len(co.keyTags))
		for i, k := range keys {
			if t, ok := co.keyTags[k]; ok {
				co.bkeyTags[bkeys[i]] = t
			}
		}
	}
	return bkeys
}

// GetOrCreateMulti is GetOrCreate for many keys at once: one backend round
// trip reads them all, and one call of create makes every key that has no
// usable value (create gets them in the order given, without duplicates).
// The lock and stale rules apply per key, and values that cannot be encoded
// are shared as GetOrCreate's are. Keys that create leaves out of its
// result are not cached and are absent from the returned map.
func GetOrCreateMulti[T any](ctx context.Context, r *Region, keys []string, create func(ctx context.Context, missing []string) (map[string]T, error), opts ...CallOption) (map[string]T, error) {
	l := &mapLoader[T]{create: create, out: make(map[string]T, len(keys))}
	err := r.Load(ctx, keys, l, opts...)
	if err != nil {
		return nil, err
	}
	return l.out, nil
}

// mapLoader is the Loader of GetOrCreateMulti.
type mapLoader[T any] struct {
	create func(ctx context.Context, missing []string) (map[string]T, error) // called from the creator's goroutine
	out    map[string]T                                                      // written only by the caller's goroutine
}

func (l *mapLoader[T]) Create(ctx context.Context, keys []string) (map[string]any, error) {
	m, err := l.create(ctx, keys)
	if err != nil {
		return nil, err
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out, nil
}

func (l *mapLoader[T]) Decode(key string, c Codec, payload []byte) error {
	var v T
	if err := c.Unmarshal(payload, &v); err != nil {
		return err
	}
	l.out[key] = v
	return nil
}

func (l *mapLoader[T]) Adopt(key string, v any, _ bool) bool {
	if t, ok := v.(T); ok {
		l.out[key] = t
	}
	return true
}
