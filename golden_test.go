package dogpile_test

import (
	"context"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/region"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/*.golden from the current encoding")

// goldenEntry is a value whose stored bytes are pinned in testdata.
type goldenEntry struct {
	ID      int64
	Name    string
	Tags    []string
	Created time.Time
}

// TestGoldenRegionEntry pins the bytes a region stores (envelope and
// payload). A change to the envelope layout or the default codec that keeps
// the format version would make old entries misread after a deploy: this
// test fails until testdata is regenerated, which is the moment to bump the
// envelope version (region/envelope.go).
func TestGoldenRegionEntry(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	b := memory.New()
	// The region-wide generations start from random values: pin them.
	b.Counter("golden:H:{golden:*}").Store(7)
	b.Counter("golden:S:{golden:*}").Store(9)
	r := region.New(b, region.WithName("golden"), region.WithExpiration(time.Hour),
		region.WithClock(func() time.Time { return at }))
	v := goldenEntry{ID: 42, Name: "Ada", Tags: []string{"a", "b"}, Created: at}
	if err := r.Set(context.Background(), "k", v); err != nil {
		t.Fatal(err)
	}
	vals, err := b.GetMulti(context.Background(), []string{"golden:k:k"})
	if err != nil || vals[0] == nil {
		t.Fatalf("entry not found at its key: %v", err)
	}
	checkGolden(t, "region-entry.golden", vals[0])
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *updateGolden {
		if err := os.WriteFile(path, []byte(hex.EncodeToString(got)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestGolden -update-golden . to create it)", err)
	}
	if hex.EncodeToString(got) != strings.TrimSpace(string(want)) {
		t.Fatalf("the stored encoding changed:\n got %x\nwant %s\nBump the envelope version if old entries could be misread, then regenerate with -update-golden.", got, want)
	}
}
