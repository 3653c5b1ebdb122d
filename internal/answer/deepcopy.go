package answer

import (
	"fmt"
	"reflect"
	"sync"
	"unsafe"
)

// deepener completes a shallow copy: given an addressable value that shares
// its references (pointers, slices, maps) with another, it replaces each of
// them, recursively, with a copy of its own. Strings and time.Time are
// immutable and stay shared.
//
// A nil deepener means the type holds no references: a plain assignment is
// already a deep copy.
type deepener func(v reflect.Value)

// deepenerInfo is what deepenerFor knows of a type.
type deepenerInfo struct {
	d        deepener
	copyable bool // false: the type holds something that cannot be copied (an interface, a func, an unexported reference)
}

var deepeners sync.Map // reflect.Type → deepenerInfo

// deepenerFor returns the deepener of t, and whether values of t can be
// copied at all.
func deepenerFor(t reflect.Type) (deepener, bool) {
	if i, ok := deepeners.Load(t); ok {
		info := i.(deepenerInfo)
		return info.d, info.copyable
	}
	d, ok := buildDeepener(t, map[reflect.Type]*deepener{})
	deepeners.Store(t, deepenerInfo{d, ok})
	return d, ok
}

// deepCopy returns a copy of v that shares nothing mutable with it; d and ok
// are deepenerFor(v.Type()).
func deepCopy(v reflect.Value, d deepener) reflect.Value {
	c := reflect.New(v.Type()).Elem()
	c.Set(v)
	if d != nil {
		d(c)
	}
	return c
}

// copyShared returns a deep copy of v, an answer other callers may be
// reading at the same time, or false when its type cannot be copied. Rows
// scanned into maps are copied value by value, as their values' types are
// known only at run time.
func copyShared(v reflect.Value) (reflect.Value, bool) {
	switch v.Type() {
	case mapType:
		if v.IsNil() {
			return v, true
		}
		m, ok := copyRow(v.Interface().(map[string]any))
		return reflect.ValueOf(m), ok
	case mapSliceType:
		if v.IsNil() {
			return v, true
		}
		rows := v.Interface().([]map[string]any)
		c := make([]map[string]any, len(rows))
		for i, row := range rows {
			var ok bool
			if c[i], ok = copyRow(row); !ok {
				return reflect.Value{}, false
			}
		}
		return reflect.ValueOf(c), true
	}
	d, ok := deepenerFor(v.Type())
	if !ok {
		return reflect.Value{}, false
	}
	return deepCopy(v, d), true
}

// copyRow copies one row scanned into a map, and the values it holds.
func copyRow(row map[string]any) (map[string]any, bool) {
	if row == nil {
		return nil, true
	}
	c := make(map[string]any, len(row))
	for k, x := range row {
		if rv := reflect.ValueOf(x); x != nil && hasRefs(rv) {
			d, ok := deepenerFor(rv.Type())
			if !ok {
				return nil, false
			}
			x = deepCopy(rv, d).Interface()
		}
		c[k] = x
	}
	return c, true
}

// hasRefs reports whether v holds, anywhere, a non-nil pointer, slice or
// map: memory that a plain assignment of v would share.
func hasRefs(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Map:
		return !v.IsNil()
	case reflect.Array:
		for i := range v.Len() {
			if hasRefs(v.Index(i)) {
				return true
			}
		}
	case reflect.Struct:
		if v.Type() == timeType {
			return false
		}
		for i := range v.NumField() {
			if hasRefs(v.Field(i)) {
				return true
			}
		}
	}
	return false
}

// refSize approximates the memory reachable from v through its pointers,
// slices, maps and strings (v's own size not included).
func refSize(v reflect.Value) int {
	switch v.Kind() {
	case reflect.String:
		return v.Len()
	case reflect.Pointer:
		if v.IsNil() {
			return 0
		}
		return int(v.Type().Elem().Size()) + refSize(v.Elem())
	case reflect.Slice:
		if v.IsNil() {
			return 0
		}
		n := v.Len() * int(v.Type().Elem().Size())
		for i := range v.Len() {
			n += refSize(v.Index(i))
		}
		return n
	case reflect.Array:
		n := 0
		for i := range v.Len() {
			n += refSize(v.Index(i))
		}
		return n
	case reflect.Map:
		if v.IsNil() {
			return 0
		}
		n := 48 // the map's header
		it := v.MapRange()
		for it.Next() {
			n += 16 + int(it.Key().Type().Size()+it.Value().Type().Size()) + refSize(it.Key()) + refSize(it.Value())
		}
		return n
	case reflect.Struct:
		if v.Type() == timeType {
			return 0
		}
		n := 0
		for i := range v.NumField() {
			n += refSize(v.Field(i))
		}
		return n
	}
	return 0
}

// pointInto sets ptrs[i] = &arr[i] for every i; ptrs is a []*T and arr a
// []T of the same length. It writes the pointers directly: through reflect
// each would take three calls. It checks both, since a mistake would write
// pointers of the wrong type or past the end of ptrs.
func pointInto(ptrs, arr reflect.Value) {
	if ptrs.Kind() != reflect.Slice || arr.Kind() != reflect.Slice ||
		ptrs.Type().Elem() != reflect.PointerTo(arr.Type().Elem()) || ptrs.Len() != arr.Len() {
		panic(fmt.Sprintf("answer: pointInto(%s of %d, %s of %d)", ptrs.Type(), ptrs.Len(), arr.Type(), arr.Len()))
	}
	n := ptrs.Len()
	if n == 0 {
		return
	}
	size := arr.Type().Elem().Size()
	p, a := ptrs.UnsafePointer(), arr.UnsafePointer()
	for i := range n {
		*(*unsafe.Pointer)(unsafe.Add(p, uintptr(i)*unsafe.Sizeof(p))) = unsafe.Add(a, uintptr(i)*size)
	}
}

func buildDeepener(t reflect.Type, building map[reflect.Type]*deepener) (deepener, bool) {
	if t == timeType {
		return nil, true // its *Location is never changed once made
	}
	if slot, ok := building[t]; ok {
		// A recursive type (a model whose association points back to it):
		// go through the deepener being built. Decoded values are trees, so
		// the recursion ends.
		return func(v reflect.Value) { (*slot)(v) }, true
	}
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128, reflect.String:
		return nil, true
	case reflect.Pointer, reflect.Slice, reflect.Map, reflect.Array, reflect.Struct:
	default: // interfaces, funcs, channels, unsafe pointers
		return nil, false
	}

	slot := new(deepener)
	building[t] = slot
	defer delete(building, t)
	var d deepener
	switch t.Kind() {
	case reflect.Pointer:
		e, ok := buildDeepener(t.Elem(), building)
		if !ok {
			return nil, false
		}
		d = func(v reflect.Value) {
			if v.IsNil() {
				return
			}
			n := reflect.New(t.Elem())
			n.Elem().Set(v.Elem())
			if e != nil {
				e(n.Elem())
			}
			v.Set(n)
		}
	case reflect.Slice:
		e, ok := buildDeepener(t.Elem(), building)
		if !ok {
			return nil, false
		}
		d = func(v reflect.Value) {
			if v.IsNil() {
				return // nil stays nil; an empty slice gets a new empty array
			}
			n := reflect.MakeSlice(t, v.Len(), v.Len())
			reflect.Copy(n, v)
			if e != nil {
				for i := 0; i < n.Len(); i++ {
					e(n.Index(i))
				}
			}
			v.Set(n)
		}
	case reflect.Array:
		e, ok := buildDeepener(t.Elem(), building)
		if !ok {
			return nil, false
		}
		if e != nil {
			d = func(v reflect.Value) {
				for i := 0; i < v.Len(); i++ {
					e(v.Index(i))
				}
			}
		}
	case reflect.Map:
		kd, kok := buildDeepener(t.Key(), building)
		e, ok := buildDeepener(t.Elem(), building)
		if !kok || !ok || kd != nil {
			return nil, false // keys holding references: not worth it
		}
		d = func(v reflect.Value) {
			if v.IsNil() {
				return
			}
			n := reflect.MakeMapWithSize(t, v.Len())
			it := v.MapRange()
			for it.Next() {
				x := it.Value()
				if e != nil {
					x = deepCopy(x, e)
				}
				n.SetMapIndex(it.Key(), x)
			}
			v.Set(n)
		}
	case reflect.Struct:
		type part struct {
			i int
			d deepener
		}
		var parts []part
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			fd, ok := buildDeepener(sf.Type, building)
			if !ok {
				return nil, false
			}
			if fd == nil {
				continue
			}
			if !sf.IsExported() {
				// A reference reflect cannot replace: copying would share it.
				return nil, false
			}
			parts = append(parts, part{i, fd})
		}
		if len(parts) > 0 {
			d = func(v reflect.Value) {
				for _, p := range parts {
					p.d(v.Field(p.i))
				}
			}
		}
	}
	*slot = d
	if d == nil {
		// Nothing to deepen; a recursive reference built meanwhile calls
		// through slot, which must not be nil.
		*slot = func(reflect.Value) {}
	}
	return d, true
}
