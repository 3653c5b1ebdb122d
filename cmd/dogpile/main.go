// Command dogpile inspects and invalidates the cache regions an
// application keeps in Redis, for operators: after data was fixed by hand,
// say, invalidate-table makes every cached answer that read the table a
// miss, in every process that shares the cache.
//
// Usage:
//
//	dogpile [global flags] <command> [flags]
//
// Commands:
//
//	stats                          count the region's entries, bytes, stale and expired ones, tag counters
//	keys [--match GLOB] [--limit N] [--long]
//	                               list the region's keys (as stored: after the key mangler)
//	get <key>                      show one entry: its metadata and its payload (msgpack as JSON, else hex)
//	invalidate-table <table>...    invalidate what a write to each table invalidates (dogpile.TableTags)
//	invalidate-region [--soft]     invalidate every entry of the region (hard: misses; soft: stale)
//
// Global flags:
//
//	--redis URL      redis:// or rediss:// URL of the server (default $DOGPILE_REDIS_URL)
//	--cluster ADDRS  comma-separated addresses of Redis Cluster nodes, instead of --redis
//	--prefix P       the key prefix of the application's Redis backend (redisbackend.WithPrefix)
//	--region NAME    the region (default "default")
//	--timeout D      bound of the connection and of each Redis operation (default 5s)
//
// "dogpile -h" and "dogpile <command> -h" print the usage. The exit status
// is 0 on success, 1 when the command failed (Redis cannot be reached, no
// such entry), 2 on a usage error.
package main

import (
	"context"
	"os"
	"os/signal"

	goredis "github.com/redis/go-redis/v9"
)

// quiet drops the Redis client's own log lines: run reports failures in
// one line of its own.
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

func main() {
	goredis.SetLogger(quiet{})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
