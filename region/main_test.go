package region_test

import (
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	redisbackend "github.com/dogpile-go/dogpile/backends/redis"
	"github.com/dogpile-go/dogpile/internal/testharness"
)

// TestMain stops the shared redis-server of the tests that use one
// (sharedRedis) after the last test.
func TestMain(m *testing.M) { os.Exit(testharness.Main(m)) }

var prefixSeq atomic.Int64

// sharedRedis returns a Redis backend on the test binary's shared server,
// under a prefix no other test uses, and a raw client for inspecting it.
func sharedRedis(t testing.TB, opts ...redisbackend.Option) (*redisbackend.Backend, *goredis.Client) {
	t.Helper()
	srv := testharness.SharedRedis(t)
	prefix := fmt.Sprintf("%s#%d", strings.NewReplacer("{", "_", "}", "_", " ", "_").Replace(t.Name()), prefixSeq.Add(1))
	return redisOn(t, srv.Addr, prefix, opts...)
}

// redisOn returns a Redis backend on the server at addr under prefix (two
// backends with one prefix stand for two processes), and a raw client.
func redisOn(t testing.TB, addr, prefix string, opts ...redisbackend.Option) (*redisbackend.Backend, *goredis.Client) {
	t.Helper()
	client := goredis.NewClient(&goredis.Options{Addr: addr})
	raw := goredis.NewClient(&goredis.Options{Addr: addr})
	all := append([]redisbackend.Option{redisbackend.WithPrefix(prefix), redisbackend.WithTimeout(2 * time.Second)}, opts...)
	b := redisbackend.New(client, all...)
	t.Cleanup(func() {
		_ = b.Close()
		_ = client.Close()
		_ = raw.Close()
	})
	return b, raw
}

// eventually is the generous deadline of a test waiting for an event.
const eventually = 15 * time.Second

// waitFor polls cond until it holds, failing the test after the generous
// deadline.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(eventually)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// sharedAddr returns the address of the test binary's shared redis-server.
func sharedAddr(t testing.TB) string {
	t.Helper()
	return testharness.SharedRedis(t).Addr
}
