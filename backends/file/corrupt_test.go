//go:build unix

package filebackend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/dogpile-go/dogpile/region"
)

// fill opens a backend on a new directory, stores items and closes it; it
// returns the directory.
func fill(t *testing.T, items map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	b, err := New(dir)
	must(t, err)
	var list []region.Item
	for k, v := range items {
		list = append(list, region.Item{Key: k, Value: []byte(v)})
	}
	must(t, b.SetMulti(ctx, list))
	must(t, b.Close())
	return dir
}

func dataFile(dir string) string { return filepath.Join(dir, "data.db") }

// overwrite writes p over the data file at off.
func overwrite(t *testing.T, dir string, off int64, p []byte) {
	t.Helper()
	f, err := os.OpenFile(dataFile(dir), os.O_RDWR, 0)
	must(t, err)
	defer func() { must(t, f.Close()) }()
	_, err = f.WriteAt(p, off)
	must(t, err)
}

// damageAll flips a bit of the byte at off in every copy of marker in the
// data file (bbolt may keep old copies in free pages).
func damageAll(t *testing.T, dir, marker string, off int) {
	t.Helper()
	data, err := os.ReadFile(dataFile(dir))
	must(t, err)
	n := 0
	for at := 0; ; {
		i := bytes.Index(data[at:], []byte(marker))
		if i < 0 {
			break
		}
		overwrite(t, dir, int64(at+i+off), []byte{marker[off] ^ 0x20})
		n++
		at += i + 1
	}
	if n == 0 {
		t.Fatalf("%q not found in the file", marker)
	}
}

// expectEmptyAndWorking checks that b holds nothing of before and works.
func expectEmptyAndWorking(t *testing.T, b *Backend, before ...string) {
	t.Helper()
	if got := present(t, b, before); len(got) != 0 {
		t.Fatalf("entries of the damaged file served: %v", got)
	}
	set(t, b, "after", "works", 0)
	if v := get(t, b, "after"); string(v) != "works" {
		t.Fatalf("after the reset Get = %q", v)
	}
}

// TestDamagedMetaPages: both meta pages of the file are overwritten. New
// replaces the file with an empty one and says so (Stats().Resets); what
// the file held is never served.
func TestDamagedMetaPages(t *testing.T) {
	dir := fill(t, map[string]string{"a": "1", "b": "2"})
	junk := bytes.Repeat([]byte{0xA5}, 48)
	ps := int64(os.Getpagesize())
	overwrite(t, dir, 16, junk)
	overwrite(t, dir, ps+16, junk)
	b := openTestBackend(t, dir)
	if st := b.Stats(); st.Resets != 1 {
		t.Fatalf("Resets = %d; want 1", st.Resets)
	}
	expectEmptyAndWorking(t, b, "a", "b")
	// The new file is sound: it opens again without a reset.
	must(t, b.Close())
	b2 := openTestBackend(t, dir)
	if st := b2.Stats(); st.Resets != 0 || string(get(t, b2, "after")) != "works" {
		t.Fatalf("reopen of the new file: %+v, after = %q", st, get(t, b2, "after"))
	}
}

// TestGarbageFile: a data file that is not a database at all (random
// bytes; too short) is replaced by an empty one.
func TestGarbageFile(t *testing.T) {
	for _, size := range []int{64 << 10, 100} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			dir := t.TempDir()
			junk := make([]byte, size)
			for i := range junk {
				junk[i] = byte(rand.Uint32())
			}
			must(t, os.WriteFile(dataFile(dir), junk, 0o600))
			b := openTestBackend(t, dir)
			if st := b.Stats(); st.Resets != 1 {
				t.Fatalf("Resets = %d; want 1", st.Resets)
			}
			expectEmptyAndWorking(t, b)
		})
	}
}

// TestForeignBoltFile: a sound bbolt file with buckets of another program
// is not removed: New fails with ErrForeign and the file is unchanged.
func TestForeignBoltFile(t *testing.T) {
	dir := t.TempDir()
	db, err := bolt.Open(dataFile(dir), 0o600, nil)
	must(t, err)
	must(t, db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucket([]byte("invoices"))
		if err != nil {
			return err
		}
		return bk.Put([]byte("1"), []byte("precious"))
	}))
	must(t, db.Close())
	before, err := os.ReadFile(dataFile(dir))
	must(t, err)
	b, err := New(dir)
	if !errors.Is(err, ErrForeign) {
		if b != nil {
			_ = b.Close()
		}
		t.Fatalf("New on a foreign bbolt file = %v; want ErrForeign", err)
	}
	after, err := os.ReadFile(dataFile(dir))
	must(t, err)
	if !bytes.Equal(before, after) {
		t.Fatal("New changed a foreign file")
	}
}

// TestDamagedValue: a byte of a stored value is flipped in the file. That
// key reads as missing (Stats().Corrupt), the others as they were; a
// region regenerates it.
func TestDamagedValue(t *testing.T) {
	marker := "MARKER-" + strings.Repeat("x", 40)
	dir := fill(t, map[string]string{"victim": marker, "other": "fine"})
	damageAll(t, dir, marker, 3)
	b := openTestBackend(t, dir)
	vals, err := b.GetMulti(ctx, []string{"victim", "other"})
	must(t, err)
	if vals[0] != nil || string(vals[1]) != "fine" {
		t.Fatalf("GetMulti = %q; want [nil fine]: a damaged value must read as missing", vals)
	}
	if st := b.Stats(); st.Corrupt != 1 || st.Resets != 0 {
		t.Fatalf("stats %+v; want 1 corrupt record, no reset", st)
	}
	// The guard of a SetIf sees it missing too.
	ok, err := b.SetIf(ctx, region.Item{Key: "victim", Value: []byte("new")}, []region.Guard{{Key: "victim"}})
	if err != nil || !ok {
		t.Fatalf("SetIf guarded on the damaged key being missing = %v, %v", ok, err)
	}
	if v := get(t, b, "victim"); string(v) != "new" {
		t.Fatalf("victim = %q after it was stored again", v)
	}
}

// TestDamagedRegionEntry: a region's entry damaged in the file is a miss:
// GetOrCreate runs the creator once and stores its value again.
func TestDamagedRegionEntry(t *testing.T) {
	dir := t.TempDir()
	b, err := New(dir)
	must(t, err)
	r := region.New(b, region.WithName("r"))
	marker := "MARKER-" + strings.Repeat("y", 40)
	must(t, r.Set(ctx, "k", marker))
	must(t, b.Close())
	damageAll(t, dir, marker, 10)

	b2 := openTestBackend(t, dir)
	r2 := region.New(b2, region.WithName("r"))
	calls := 0
	v, err := region.GetOrCreate(ctx, r2, "k", func(context.Context) (string, error) {
		calls++
		return "regenerated", nil
	})
	if err != nil || v != "regenerated" || calls != 1 {
		t.Fatalf("GetOrCreate over a damaged entry = %q, %v, %d calls; want the creator's value", v, err, calls)
	}
	var got string
	if found, _ := r2.Get(ctx, "k", &got); !found || got != "regenerated" {
		t.Fatalf("the regenerated value was not stored: %v %q", found, got)
	}
}

// TestDamagedPage: the header of the page holding some values is
// overwritten, so bbolt panics reading it. The read fails with ErrCorrupt
// (the panic is recovered, no bytes are served), a region over it misses
// and runs its creator, and the next operation replaces the file with an
// empty one.
func TestDamagedPage(t *testing.T) {
	items := map[string]string{}
	for i := range 200 {
		items[fmt.Sprintf("key%03d", i)] = fmt.Sprintf("value-%03d-%s", i, strings.Repeat("z", 80))
	}
	dir := fill(t, items)
	data, err := os.ReadFile(dataFile(dir))
	must(t, err)
	off := bytes.Index(data, []byte("value-100-"))
	if off < 0 {
		t.Fatal("value not found in the file")
	}
	ps := os.Getpagesize()
	page := off / ps * ps
	overwrite(t, dir, int64(page), bytes.Repeat([]byte{0xEE}, 8)) // the page id

	b := openTestBackend(t, dir)
	_, err = b.GetMulti(ctx, []string{"key100"})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("GetMulti on a damaged page = %v; want ErrCorrupt", err)
	}
	// A region reads the failure as a miss, and the caller gets the
	// creator's value, not an error. Its read repairs the file first.
	r := region.New(b, region.WithName("r"))
	calls := 0
	v, err := region.GetOrCreate(ctx, r, "k", func(context.Context) (string, error) {
		calls++
		return "made", nil
	})
	if err != nil || v != "made" || calls != 1 {
		t.Fatalf("GetOrCreate = %q, %v, %d calls", v, err, calls)
	}
	if st := b.Stats(); st.Resets != 1 {
		t.Fatalf("Resets = %d; want 1", st.Resets)
	}
	expectEmptyAndWorking(t, b, "key000", "key100", "key199")
}
