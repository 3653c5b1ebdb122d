//go:build unix

package filebackend_test

import (
	"context"
	"fmt"
	"os"
	"time"

	filebackend "github.com/dogpile-go/dogpile/backends/file"
	"github.com/dogpile-go/dogpile/region"
)

// A region over the file backend. Every process of the host that opens the
// same directory shares the entries and the dogpile lock; the entries stay
// when the processes exit.
func Example() {
	dir, err := os.MkdirTemp("", "cache")
	if err != nil {
		panic(err)
	}
	defer func() { _ = os.RemoveAll(dir) }()

	b, err := filebackend.New(dir, filebackend.WithMaxBytes(64<<20))
	if err != nil {
		panic(err)
	}
	defer func() { _ = b.Close() }()
	r := region.New(b, region.WithName("users"), region.WithExpiration(10*time.Minute))

	ctx := context.Background()
	for range 2 {
		name, err := region.GetOrCreate(ctx, r, "user:1", func(context.Context) (string, error) {
			fmt.Println("loading user 1")
			return "Ann", nil
		})
		if err != nil {
			panic(err)
		}
		fmt.Println(name)
	}
	// Output:
	// loading user 1
	// Ann
	// Ann
}
