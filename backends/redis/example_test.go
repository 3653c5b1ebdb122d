package redisbackend_test

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	redisbackend "github.com/dogpile-go/dogpile/backends/redis"
	"github.com/dogpile-go/dogpile/region"
)

type User struct {
	ID   int64
	Name string
}

// A region over Redis: the same code serves a single server, Sentinel
// (MasterName set) and a Cluster (several Addrs). It needs a running server,
// so it has no Output to check.
func Example() {
	client := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:                 []string{"127.0.0.1:6379"},
		ContextTimeoutEnabled: true, // lets the backend's timeout reach the socket
	})
	defer client.Close()

	b := redisbackend.New(client,
		redisbackend.WithPrefix("myapp"),
		redisbackend.WithTimeout(100*time.Millisecond),
		redisbackend.WithLockTTL(10*time.Second),
		redisbackend.WithBreaker(5, time.Second),
	)
	defer b.Close()
	r := region.New(b, region.WithName("users"), region.WithExpiration(10*time.Minute))

	ctx := context.Background()
	u, err := region.GetOrCreate(ctx, r, "42", func(ctx context.Context) (User, error) {
		// Runs once across every process sharing the Redis, while the
		// others wait for its value.
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
