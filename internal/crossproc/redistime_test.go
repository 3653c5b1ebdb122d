package crossproc

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// The time an operation spends on Redis, which is what the README bounds
// ("a caller operation spends at most 3× the timeout on Redis"): a go-redis
// hook adds the duration of every command and pipeline to the redisClock
// found in the command's context. A caller operation runs on a context
// carrying one; the work done on its behalf (the regeneration it waits
// for, its commit's invalidation) keeps the context's values and is
// counted; the region's own background work (retries, a lock released
// later) runs on other contexts and is not.

// redisClock measures the Redis time of one operation: the time during
// which at least one of its commands was under way (commands it runs
// side by side count once).
type redisClock struct {
	mu       sync.Mutex
	inflight int       // guarded by mu
	since    time.Time // guarded by mu; when inflight last rose from 0
	ns       atomic.Int64
}

// begin records a command starting.
func (c *redisClock) begin() {
	c.mu.Lock()
	if c.inflight == 0 {
		c.since = time.Now()
	}
	c.inflight++
	c.mu.Unlock()
}

// end records a command ending.
func (c *redisClock) end() {
	c.mu.Lock()
	if c.inflight--; c.inflight == 0 {
		c.ns.Add(int64(time.Since(c.since)))
	}
	c.mu.Unlock()
}

type redisClockKey struct{}

// withRedisClock returns ctx carrying c.
func withRedisClock(ctx context.Context, c *redisClock) context.Context {
	return context.WithValue(ctx, redisClockKey{}, c)
}

// redisTimeHook is the hook that feeds the clocks.
type redisTimeHook struct{}

// DialHook counts nothing: a dial happens within a command's processing,
// which is counted whole.
func (redisTimeHook) DialHook(next goredis.DialHook) goredis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return next(ctx, network, addr)
	}
}

func (redisTimeHook) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		defer track(ctx)()
		return next(ctx, cmd)
	}
}

func (redisTimeHook) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		defer track(ctx)()
		return next(ctx, cmds)
	}
}

// track starts counting a command in ctx's clock, if it has one, and
// returns what ends it.
func track(ctx context.Context) func() {
	c, ok := ctx.Value(redisClockKey{}).(*redisClock)
	if !ok {
		return func() {}
	}
	c.begin()
	return c.end
}
