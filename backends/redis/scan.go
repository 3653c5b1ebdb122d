package redisbackend

import (
	"context"
	"strings"
	"sync"

	goredis "github.com/redis/go-redis/v9"
)

// scanCount is the COUNT hint of each SCAN: about how many keys one call
// looks at, and so how many keys Scan yields at a time at most.
const scanCount = 512

// Scan implements region.Scanner with SCAN, never KEYS: on every server
// that holds keys (each master of a Cluster, each shard of a Ring), SCAN
// with MATCH on the backend's prefix and prefix (glob characters escaped),
// then the values of each batch in one round trip (GetMulti). Each call is
// bounded by the operation timeout and goes through the circuit breaker,
// as every other operation does. A key SCAN returns twice (it may, while
// the server resizes its table) is yielded once: Scan remembers the keys
// it yielded, so its memory grows with the number of keys listed.
func (b *Backend) Scan(ctx context.Context, prefix string, yield func(keys []string, values [][]byte) bool) error {
	nodes, err := b.nodes(ctx)
	if err != nil {
		return err
	}
	match := escapeGlob(b.prefix+prefix) + "*"
	seen := map[string]struct{}{}
	for _, node := range nodes {
		var cursor uint64
		for {
			type page struct {
				keys   []string
				cursor uint64
			}
			p, err := run(ctx, b, "scan", func(ctx context.Context) (page, error) {
				keys, next, err := node.Scan(ctx, cursor, match, scanCount).Result()
				return page{keys, next}, err
			})
			if err != nil {
				return err
			}
			keys := make([]string, 0, len(p.keys))
			for _, k := range p.keys {
				if _, dup := seen[k]; dup || !strings.HasPrefix(k, b.prefix) {
					continue
				}
				seen[k] = struct{}{}
				keys = append(keys, k[len(b.prefix):])
			}
			if len(keys) > 0 {
				vals, err := b.GetMulti(ctx, keys)
				if err != nil {
					return err
				}
				n := 0
				for i, v := range vals {
					if v != nil { // gone since SCAN saw it
						keys[n], vals[n] = keys[i], v
						n++
					}
				}
				if n > 0 && !yield(keys[:n], vals[:n]) {
					return nil
				}
			}
			if p.cursor == 0 {
				break
			}
			cursor = p.cursor
		}
	}
	return nil
}

// nodes returns the clients of the servers that hold the backend's keys:
// the client itself on a single server, else each master of a Cluster or
// shard of a Ring.
func (b *Backend) nodes(ctx context.Context) ([]goredis.Cmdable, error) {
	var (
		mu  sync.Mutex
		out []goredis.Cmdable
	)
	add := func(_ context.Context, c *goredis.Client) error {
		mu.Lock()
		out = append(out, c)
		mu.Unlock()
		return nil
	}
	var err error
	switch c := b.client.(type) {
	case *goredis.ClusterClient:
		_, err = run(ctx, b, "scan: list masters", func(ctx context.Context) (struct{}, error) {
			return struct{}{}, c.ForEachMaster(ctx, add)
		})
	case *goredis.Ring:
		_, err = run(ctx, b, "scan: list shards", func(ctx context.Context) (struct{}, error) {
			return struct{}{}, c.ForEachShard(ctx, add)
		})
	default:
		out = []goredis.Cmdable{b.client}
	}
	return out, err
}

// escapeGlob quotes the characters SCAN's MATCH gives a meaning to.
func escapeGlob(s string) string {
	var sb strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\', '^', '-':
			sb.WriteByte('\\')
		}
		sb.WriteRune(r)
	}
	return sb.String()
}
