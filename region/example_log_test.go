package region_test

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/region"
)

// A region logging what it does to a slog.Logger: here an answer its
// ShouldCache refused, at DEBUG. Hits log nothing.
func ExampleWithLogger() {
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{} // stable output
			}
			return a
		},
	}))
	r := region.New(memory.New(), region.WithName("users"),
		region.WithLogger(logger, region.WithLogRate(5, 10*time.Second)))
	defer r.Close()

	ctx := context.Background()
	nonEmpty := region.ShouldCache(func(s string) bool { return s != "" })
	_, _ = region.GetOrCreate(ctx, r, "user:0", func(context.Context) (string, error) { return "", nil }, nonEmpty, region.WithTags("users"))
	_, _ = region.GetOrCreate(ctx, r, "user:1", func(context.Context) (string, error) { return "ann", nil }, nonEmpty)
	_, _ = region.GetOrCreate(ctx, r, "user:1", func(context.Context) (string, error) { return "ann", nil }, nonEmpty)
	// Output:
	// level=DEBUG msg="dogpile: answer not stored" region=users key=user:0 reason=should_cache tags=[users]
}

// A log observer added to regions already made: one observer serves both,
// and each region's records are rate-limited apart.
func ExampleNewLogObserver() {
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{} // stable output
			}
			return a
		},
	}))
	o := region.NewLogObserver(logger)
	a := region.New(memory.New(), region.WithName("a"))
	defer a.Close()
	b := region.New(memory.New(), region.WithName("b"))
	defer b.Close()
	a.AddObserver(o)
	b.AddObserver(o)

	ctx := context.Background()
	never := region.ShouldCache(func(int) bool { return false })
	for _, r := range []*region.Region{a, b} {
		_, _ = region.GetOrCreate(ctx, r, "k", func(context.Context) (int, error) { return 1, nil }, never)
	}
	// Output:
	// level=DEBUG msg="dogpile: answer not stored" region=a key=k reason=should_cache tags=[]
	// level=DEBUG msg="dogpile: answer not stored" region=b key=k reason=should_cache tags=[]
}
