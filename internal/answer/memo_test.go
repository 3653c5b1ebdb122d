package answer

import (
	"reflect"
	"testing"
	"time"
)

type memoLeaf struct {
	N    int
	Tags []string
}

type memoNode struct {
	Name     string
	At       time.Time
	Blob     []byte
	Empty    []int
	Nil      []int
	Ptr      *memoLeaf
	Leaves   []memoLeaf
	Ptrs     []*memoLeaf
	Arr      [2]*memoLeaf
	Index    map[string]*memoLeaf
	Parent   *memoNode // recursive
	private  int       // unexported, flat: copied with the struct
	Children []memoNode
}

func TestDeepCopySharesNothing(t *testing.T) {
	leaf := func(n int) *memoLeaf { return &memoLeaf{N: n, Tags: []string{"a", "b"}} }
	src := memoNode{
		Name: "root", At: time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC), Blob: []byte{1, 2, 3},
		Empty: []int{}, Ptr: leaf(1), Leaves: []memoLeaf{*leaf(2)}, Ptrs: []*memoLeaf{leaf(3), nil},
		Arr: [2]*memoLeaf{leaf(4), nil}, Index: map[string]*memoLeaf{"x": leaf(5)},
		Parent: &memoNode{Name: "parent", Ptr: leaf(6)}, private: 7,
		Children: []memoNode{{Name: "child", Ptrs: []*memoLeaf{leaf(8)}}},
	}
	d, ok := deepenerFor(reflect.TypeOf(src))
	if !ok || d == nil {
		t.Fatalf("deepenerFor: %v, %v; want a deepener", d != nil, ok)
	}
	got := deepCopy(reflect.ValueOf(src), d).Interface().(memoNode)
	if !reflect.DeepEqual(got, src) {
		t.Fatalf("copy differs:\n got %+v\nwant %+v", got, src)
	}
	if got.Empty == nil || got.Nil != nil {
		t.Errorf("nil and empty slices not kept: Empty %v (nil %v), Nil nil %v", got.Empty, got.Empty == nil, got.Nil == nil)
	}
	// Every reference is the copy's own.
	before := deepCopy(reflect.ValueOf(src), d).Interface().(memoNode)
	scribbleAll := func(n *memoNode) {
		n.Blob[0] = 9
		n.Ptr.N, n.Ptr.Tags[0] = 90, "z"
		n.Leaves[0].Tags[1] = "z"
		n.Ptrs[0].N = 90
		n.Arr[0].N = 90
		n.Index["x"].N = 90
		n.Index["y"] = nil
		n.Parent.Ptr.N = 90
		n.Children[0].Ptrs[0].Tags[0] = "z"
	}
	scribbleAll(&got)
	if !reflect.DeepEqual(src, before) {
		t.Fatalf("changing the copy changed the source")
	}
}

func TestDeepCopyRefusesWhatItCannotCopy(t *testing.T) {
	type withAny struct{ V any }
	type withFunc struct{ F func() }
	type withHidden struct{ p *int }
	type nested struct{ Inner []withAny }
	for _, v := range []any{withAny{}, withFunc{}, withHidden{p: new(int)}, nested{}, map[*int]int{}, []chan int{}} {
		if _, ok := deepenerFor(reflect.TypeOf(v)); ok {
			t.Errorf("%T: copyable; want refused", v)
		}
	}
	for _, v := range []any{0, "", time.Time{}, struct{ a, b int }{}, [3]string{}} {
		if d, ok := deepenerFor(reflect.TypeOf(v)); !ok || d != nil {
			t.Errorf("%T: deepener %v, ok %v; want none needed", v, d != nil, ok)
		}
	}
}

// TestMemoServesOnlyTheSameBytes: a hit is a copy of the remembered value
// only for the very bytes it was decoded from; other bytes are decoded.
func TestMemoServesOnlyTheSameBytes(t *testing.T) {
	type row struct {
		ID   int
		Name string
	}
	encode := func(rows []row) []byte {
		v := reflect.New(reflect.TypeOf(rows))
		v.Elem().Set(reflect.ValueOf(rows))
		b, _ := encodeResult(v, int64(len(rows)), nil)
		return b
	}
	m := NewMemo(1 << 20)
	decode := func(b []byte) []row {
		t.Helper()
		var out []row
		if _, err := m.Decode("k", b, reflect.ValueOf(&out).Elem(), nil); err != nil {
			t.Fatal(err)
		}
		return out
	}
	one := encode([]row{{1, "one"}})
	if got := decode(one); got[0].Name != "one" {
		t.Fatalf("first decode: %+v", got)
	}
	// Mark the remembered value: a hit on the same bytes must show it.
	e, ok := m.cache.GetIfPresent("k")
	if !ok {
		t.Fatal("nothing remembered after a decode")
	}
	e.val.Index(0).Field(1).SetString("remembered")
	if got := decode(one); got[0].Name != "remembered" {
		t.Fatalf("same bytes: %+v; want the remembered value", got)
	}
	if got := decode(encode([]row{{1, "uno"}})); got[0].Name != "uno" {
		t.Fatalf("other bytes: %+v; want them decoded", got)
	}
	// Another destination type with the same key is decoded, not copied.
	var other []struct {
		ID   int
		Name string
	}
	if _, err := m.Decode("k", encode([]row{{1, "uno"}}), reflect.ValueOf(&other).Elem(), nil); err != nil || other[0].Name != "uno" {
		t.Fatalf("other type: %+v, %v", other, err)
	}
	// Undecodable bytes are an error, as without the memo, and forget nothing.
	bad := append([]byte(nil), one...)
	bad[len(bad)-1] ^= 0xff
	var out []row
	if _, err := m.Decode("k2", bad[:len(bad)-2], reflect.ValueOf(&out).Elem(), nil); err == nil {
		t.Fatal("truncated answer decoded")
	}
	if _, ok := m.cache.GetIfPresent("k2"); ok {
		t.Fatal("a failed decode was remembered")
	}
	// A nil memo (WithDecodedCache(0)) decodes every time.
	var off *Memo
	if _, err := off.Decode("k", one, reflect.ValueOf(&out).Elem(), nil); err != nil || out[0].Name != "one" {
		t.Fatalf("nil memo: %+v, %v", out, err)
	}
	if NewMemo(0) != nil {
		t.Fatal("WithDecodedCache(0) made a memo")
	}
}
