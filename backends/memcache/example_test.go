package memcachebackend_test

import (
	"context"
	"fmt"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	memcachebackend "github.com/dogpile-go/dogpile/backends/memcache"
	"github.com/dogpile-go/dogpile/region"
)

type User struct {
	ID   int64
	Name string
}

// A region over memcached. Open makes a client of its own for the servers;
// the keys spread over them. It needs running servers, so it has no Output
// to check.
func Example() {
	b, err := memcachebackend.Open([]string{"127.0.0.1:11211", "127.0.0.1:11212"},
		memcachebackend.WithPrefix("myapp"),
		memcachebackend.WithTimeout(100*time.Millisecond),
		memcachebackend.WithLockTTL(10*time.Second),
	)
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	defer b.Close()
	r := region.New(b, region.WithName("users"), region.WithExpiration(10*time.Minute))
	defer r.Close()

	ctx := context.Background()
	u, err := region.GetOrCreate(ctx, r, "42", func(ctx context.Context) (User, error) {
		// Runs once across every process sharing the memcached servers,
		// while the others wait for its value.
		return User{ID: 42, Name: "Ada"}, nil
	}, region.WithTags("users"))
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Println(u.Name)

	// After a write to the users table, in every process:
	_ = r.InvalidateTags(ctx, "users")
}

// New takes a client the caller made and keeps. For operations to run in
// the caller's goroutine, give it a socket timeout no longer than the
// backend's.
func ExampleNew() {
	client := memcache.New("127.0.0.1:11211")
	client.Timeout = 100 * time.Millisecond
	client.MaxIdleConns = 64
	defer client.Close()

	b := memcachebackend.New(client, memcachebackend.WithTimeout(100*time.Millisecond))
	defer b.Close()
	r := region.New(b)
	defer r.Close()
	_ = r
}
