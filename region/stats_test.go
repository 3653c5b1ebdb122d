package region_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/region"
)

// payloadOf is a Loader value whose Payload says it is not to be stored.
type payloadOf struct{ err error }

func (p payloadOf) Payload() ([]byte, error) { return nil, p.err }

// payloadLoader creates payloadOf values.
type payloadLoader struct{ err error }

func (l payloadLoader) Create(_ context.Context, keys []string) (map[string]any, error) {
	out := make(map[string]any, len(keys))
	for _, k := range keys {
		out[k] = payloadOf(l)
	}
	return out, nil
}
func (payloadLoader) Decode(string, region.Codec, []byte) error { return nil }
func (payloadLoader) Adopt(string, any, bool) bool              { return true }

// Every value a region does not store is counted once, under its reason.
func TestNotStoredByReason(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		reason string
		run    func(t *testing.T) *region.Region
		want   func(region.NotStoredCounts) int64
	}{
		{"should-cache", func(t *testing.T) *region.Region {
			r := region.New(memory.New())
			_, err := region.GetOrCreate(ctx, r, "k", func(context.Context) (int, error) { return 1, nil },
				region.ShouldCache(func(int) bool { return false }))
			must(t, err)
			return r
		}, func(c region.NotStoredCounts) int64 { return c.ShouldCache }},
		{"tags-changed", func(t *testing.T) *region.Region {
			r := region.New(memory.New())
			_, err := region.GetOrCreate(ctx, r, "k", func(ctx context.Context) (int, error) {
				return 1, r.InvalidateTags(ctx, "t") // a write commits while the value is made
			}, region.WithTags("t"))
			must(t, err)
			return r
		}, func(c region.NotStoredCounts) int64 { return c.TagsChanged }},
		{"bypassed", func(t *testing.T) *region.Region {
			r := region.New(downBackend(t))
			t.Cleanup(func() { _ = r.Close() })
			if err := r.InvalidateTags(ctx, "t"); err == nil {
				t.Fatal("InvalidateTags on a backend that is down succeeded")
			}
			_, err := region.GetOrCreate(ctx, r, "k", func(context.Context) (int, error) { return 1, nil }, region.WithTags("t"))
			must(t, err)
			return r
		}, func(c region.NotStoredCounts) int64 { return c.Bypassed }},
		{"unencodable", func(t *testing.T) *region.Region {
			r := region.New(memory.New())
			_, err := region.GetOrCreate(ctx, r, "k", func(context.Context) (func(), error) { return func() {}, nil })
			must(t, err)
			return r
		}, func(c region.NotStoredCounts) int64 { return c.Unencodable }},
		{"payload-unencodable", func(t *testing.T) *region.Region {
			r := region.New(memory.New())
			must(t, r.Load(ctx, []string{"k"}, payloadLoader{fmt.Errorf("custom: %w", region.ErrUnencodable)}))
			return r
		}, func(c region.NotStoredCounts) int64 { return c.Unencodable }},
		{"partial", func(t *testing.T) *region.Region {
			r := region.New(memory.New())
			must(t, r.Load(ctx, []string{"k"}, payloadLoader{fmt.Errorf("scan: %w", region.ErrPartial)}))
			return r
		}, func(c region.NotStoredCounts) int64 { return c.Partial }},
	} {
		t.Run(c.reason, func(t *testing.T) {
			r := c.run(t)
			s := r.Stats()
			by := s.NotStoredBy
			sum := by.ShouldCache + by.TagsChanged + by.Bypassed + by.Unencodable + by.Partial
			if s.NotStored != 1 || c.want(by) != 1 || sum != 1 {
				t.Errorf("stats %+v; want one value not stored, under %s", s, c.reason)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
