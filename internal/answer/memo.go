package answer

import (
	"bytes"
	"math"
	"reflect"

	"github.com/maypok86/otter/v2"
)

// Memo remembers, per cache key, the last answer decoded from a
// region, with the exact bytes it came from. A hit whose bytes are the same
// is served by copying the remembered value instead of decoding them again:
// the region is still read on every hit (the entry's expiry and table
// versions decide, and a shared backend stays the truth), only the decoding
// is saved.
//
// The memo can never serve an answer the region would not: it is consulted
// with the bytes the region just returned as fresh, and used only when they
// are equal, byte for byte, to those it decoded (for the same destination
// type). Remembered values are never handed out; callers get deep copies
// (deepcopy.go), so nothing a caller or a hook does to its answer reaches
// another caller.
type Memo struct {
	cache *otter.Cache[string, *memoEntry] // safe for concurrent use; entries are immutable
}

// memoEntry is one remembered answer. Immutable once stored.
type memoEntry struct {
	raw  []byte        // the answer's bytes (result format), owned by the entry
	typ  reflect.Type  // the destination type it was decoded into
	val  reflect.Value // the decoded destination; read only
	d    deepener      // val's type's deepener
	rows int64         // RowsAffected of the answer
	size int           // about the memory the entry holds
	// plain: val holds no pointer, slice or map, so an assignment is a copy.
	plain bool

	// For a slice destination: its elements as a []T (for a []*T, copies of
	// what its pointers point at; not set when one is nil), whether they
	// hold no references of their own, and T's deepener.
	elems      reflect.Value
	plainElems bool
	elemD      deepener
}

// newMemoEntry remembers v, of a copyable type with deepener d, or returns
// nil for a value it does not keep.
func newMemoEntry(b []byte, v reflect.Value, d deepener, rows int64) *memoEntry {
	e := &memoEntry{raw: bytes.Clone(b), typ: v.Type(), val: deepCopy(v, d), d: d, rows: rows}
	e.plain = !hasRefs(e.val)
	e.size = len(e.raw) + int(e.typ.Size()) + refSize(e.val)
	if e.typ.Kind() != reflect.Slice || e.val.IsNil() {
		return e
	}
	et, elems := e.typ.Elem(), e.val
	if et.Kind() == reflect.Pointer {
		et = et.Elem()
		elems = reflect.MakeSlice(reflect.SliceOf(et), e.val.Len(), e.val.Len())
		for i := range e.val.Len() {
			p := e.val.Index(i)
			if p.IsNil() {
				return nil // not from a scan: not worth remembering
			}
			elems.Index(i).Set(p.Elem())
		}
		e.size += elems.Len() * int(et.Size())
	}
	e.elems, e.elemD, e.plainElems = elems, mustDeepener(et), true
	for i := range elems.Len() {
		if hasRefs(elems.Index(i)) {
			e.plainElems = false
			break
		}
	}
	return e
}

// mustDeepener is deepenerFor for a type known to be copyable.
func mustDeepener(t reflect.Type) deepener {
	d, _ := deepenerFor(t)
	return d
}

// copyTo sets dst (addressable, of the entry's type) to a deep copy of the
// remembered value.
func (e *memoEntry) copyTo(dst reflect.Value) {
	if e.elems.IsValid() {
		n := e.elems.Len()
		s := reflect.MakeSlice(e.typ, n, n)
		e.fill(s, reflect.Value{})
		dst.Set(s)
		return
	}
	dst.Set(e.val)
	if !e.plain && e.d != nil {
		e.d(dst)
	}
}

// fill sets the elements of dst, a slice of the entry's type and length, to
// deep copies of the remembered ones. For a []*T, arr may give the []T of
// the same length the copies are made in; else fill allocates one.
func (e *memoEntry) fill(dst, arr reflect.Value) {
	if !e.elems.IsValid() { // a []*T with nil elements: one by one
		reflect.Copy(dst, e.val)
		if d := mustDeepener(e.typ.Elem()); d != nil {
			for i := range dst.Len() {
				d(dst.Index(i))
			}
		}
		return
	}
	n := e.elems.Len()
	pointers := e.typ.Elem().Kind() == reflect.Pointer
	to := dst
	if pointers {
		to = arr
		if !to.IsValid() {
			to = reflect.MakeSlice(e.elems.Type(), n, n)
		}
	}
	reflect.Copy(to, e.elems)
	if !e.plainElems && e.elemD != nil {
		for i := range n {
			e.elemD(to.Index(i))
		}
	}
	if pointers {
		pointInto(dst, to)
	}
}

// memoOverhead approximates what an entry costs beyond its bytes and
// values.
const memoOverhead = 128

// NewMemo returns a memo that holds at most about maxBytes of remembered
// answers, or nil (a memo that always decodes) when maxBytes is not
// positive.
func NewMemo(maxBytes int64) *Memo {
	if maxBytes <= 0 {
		return nil
	}
	return &Memo{cache: otter.Must(&otter.Options[string, *memoEntry]{
		MaximumWeight: uint64(maxBytes),
		Executor:      func(fn func()) { fn() }, // as backends/memory: no goroutine per drain
		Weigher: func(k string, e *memoEntry) uint32 {
			n := len(k) + e.size + memoOverhead
			if n > math.MaxUint32 {
				return math.MaxUint32
			}
			return uint32(n)
		},
	})}
}

// Decode fills dest (addressable) from the answer b stored under key, and
// returns its RowsAffected, copying a remembered value when b is what it
// came from. A nil memo always decodes. On an error dest is left zeroed.
// rs reads answers stored as rows (StoredAsRows); it may be nil for other
// destinations.
func (m *Memo) Decode(key string, b []byte, dest reflect.Value, rs Rescanner) (int64, error) {
	if e := m.lookup(key, b, dest.Type()); e != nil {
		e.copyTo(dest)
		return e.rows, nil
	}
	rows, err := decodeResult(b, dest, rs)
	if err == nil {
		m.remember(key, b, dest, rows)
	}
	return rows, err
}

// DecodeSlice reads the answer b stored under key, a slice of type t, to be
// copied later into a window of a larger destination (Slice.CopyTo): a
// remembered answer is taken as it is, and copied only then.
func (m *Memo) DecodeSlice(key string, b []byte, t reflect.Type, rs Rescanner) (Slice, error) {
	if e := m.lookup(key, b, t); e != nil {
		return Slice{n: e.val.Len(), memo: e}, nil
	}
	part := reflect.New(t).Elem()
	rows, err := decodeResult(b, part, rs)
	if err != nil {
		return Slice{}, err
	}
	m.remember(key, b, part, rows)
	return Slice{n: part.Len(), own: part}, nil
}

// Slice is one slice answer on its way into a window of a larger
// destination: the per-parent children of a preload, which are put side by
// side in one slice. It is either the caller's own value or a remembered
// one, which CopyTo copies.
type Slice struct {
	n    int           // how many elements
	own  reflect.Value // the caller's own slice, or
	memo *memoEntry    // what the memo remembers
}

// Len returns how many elements the answer has.
func (s Slice) Len() int { return s.n }

// CopyTo sets the elements of dst, a window of the destination of the
// answer's type and length, to those of the answer. For a []*T, arr is the
// window of the same length of a []T that the copies are made in (so that
// the pointers point into one array), or the zero Value for a []T.
func (s Slice) CopyTo(dst, arr reflect.Value) {
	switch {
	case s.memo != nil:
		s.memo.fill(dst, arr)
	case arr.IsValid():
		for i := range s.n {
			if p := s.own.Index(i); !p.IsNil() {
				arr.Index(i).Set(p.Elem())
			}
		}
		pointInto(dst, arr)
		for i := range s.n {
			if s.own.Index(i).IsNil() { // never from a scan; kept as it was
				dst.Index(i).SetZero()
			}
		}
	default:
		reflect.Copy(dst, s.own)
	}
}

// lookup returns the entry remembered for key when it was decoded from
// exactly b into a t, or nil.
func (m *Memo) lookup(key string, b []byte, t reflect.Type) *memoEntry {
	if m == nil {
		return nil
	}
	e, ok := m.cache.GetIfPresent(key)
	if !ok || e.typ != t || !bytes.Equal(e.raw, b) {
		return nil
	}
	return e
}

// remember keeps a copy of v, just decoded from b, for key. Only answers in
// the compact format, or stored as rows, are kept: equal bytes always
// decode to equal values (the first does not depend on the region's codec,
// the second is read back by the same scan from the same values).
func (m *Memo) remember(key string, b []byte, v reflect.Value, rows int64) {
	if m == nil || !rememberable(b) {
		return
	}
	d, ok := deepenerFor(v.Type())
	if !ok {
		return
	}
	if e := newMemoEntry(b, v, d, rows); e != nil {
		m.cache.Set(key, e)
	}
}

// rememberable reports an answer the memo may keep (see remember).
func rememberable(b []byte) bool {
	_, _, kind, _, err := resultHeader(b)
	return err == nil && (kind == destCompact || kind == destRows)
}
