package dogpile_test

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/region"
)

// The plugin's log: here the record of an answer not stored because the
// scan failed, naming its table. Hits and misses log nothing.
func ExampleWithLogger() {
	db, _, done := openExampleDB()
	defer done()
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == "key" {
				return slog.Attr{} // stable output: no time, no hashed key
			}
			return a
		},
	}))
	regions := map[string]*region.Region{"default": region.New(memory.New())}
	if err := db.Use(dogpile.New(regions, dogpile.WithLogger(logger))); err != nil {
		panic(err)
	}
	var out []struct{ Year int }
	err := db.Scopes(dogpile.FromCache("default")).Raw("SELECT title AS year FROM example_books").Find(&out).Error
	fmt.Println("scan failed:", err != nil)
	// Output:
	// level=INFO msg="dogpile: answer not stored" region=default reason=partial tables=[example_books]
	// scan failed: true
}

// OutcomeOf after a finisher says how the plugin served it.
func ExampleOutcomeOf() {
	db, _, done := openExampleDB()
	defer done()
	if err := db.Use(dogpile.New(map[string]*region.Region{"default": region.New(memory.New())})); err != nil {
		panic(err)
	}
	for range 2 {
		var a ExampleAuthor
		tx := db.Scopes(dogpile.FromCache("default")).Where("name = ?", "Lem").First(&a)
		fmt.Println(a.Name, dogpile.OutcomeOf(tx))
	}
	// Output:
	// Lem miss
	// Lem hit
}
