package redisbackend

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dogpile-go/dogpile/region"
)

// bumpScript applies one phase of a tag invalidation to the tags whose
// counters are KEYS[1..n] and, when ARGV[2] is not "0", whose pending
// markers are KEYS[n+1..2n]: each counter is incremented, and each marker's
// writer count moved by ARGV[2], never below 0, with a time to live of
// ARGV[3] milliseconds. ARGV[1] is n. Counters never expire.
//
// The common case is one INCR per counter and an INCRBY and a PEXPIRE per
// marker. A counter that was missing (INCR made it 1) is set to its fresh
// start, ARGV[3+i], and incremented, so it does not repeat a value it held
// before it was lost. One that INCR cannot take (overwritten with text or a
// float, a key of another type, at the end of its range) is replaced the
// same way: entries stamped with what it held become misses, and the
// invalidation lands instead of failing for ever. A marker that cannot be
// read counts no writer: it is set to the writers this phase adds.
var bumpScript = goredis.NewScript(`
local n = tonumber(ARGV[1])
local delta = tonumber(ARGV[2])
for i = 1, n do
  local k = KEYS[i]
  local ok, v = pcall(redis.call, 'INCR', k)
  if not ok or v == 1 then
    redis.call('DEL', k)
    redis.call('SET', k, ARGV[3 + i])
    redis.call('INCR', k)
  end
  if delta ~= 0 then
    local m = KEYS[n + i]
    local mok, w = pcall(redis.call, 'INCRBY', m, delta)
    if not mok or w < 0 then
      redis.call('SET', m, math.max(delta, 0), 'PX', ARGV[3])
    else
      redis.call('PEXPIRE', m, ARGV[3])
    end
  end
end
return n
`)

// BumpTags implements region.TagBumper: one script on a single server; on a
// cluster one script per slot (a tag's counter and marker share one), all
// in one pipeline, which the client sends to the nodes in parallel.
func (b *Backend) BumpTags(ctx context.Context, counters, markers []string, delta int64, lease time.Duration) error {
	if len(counters) == 0 {
		return nil
	}
	if delta != 0 && len(markers) != len(counters) {
		return fmt.Errorf("redisbackend: bump: %d markers for %d counters", len(markers), len(counters))
	}
	leaseMS := strconv.FormatInt(max(lease.Milliseconds(), 1), 10)
	_, err := run(ctx, b, "bump", func(ctx context.Context) (struct{}, error) {
		if b.topo == single {
			keys, args := b.bumpCall(counters, markers, delta, leaseMS)
			return struct{}{}, bumpScript.Run(ctx, b.client, keys, args...).Err()
		}
		// One script per slot (per shard of another client, by hash tag): a
		// tag's counter and marker share one.
		groups := make(map[string][]int) // slot or hash tag → indexes of its tags
		var order []string
		for i, c := range counters {
			s := hashPart(b.prefix + c)
			if b.topo == cluster {
				s = strconv.Itoa(slot(b.prefix + c))
			}
			if _, ok := groups[s]; !ok {
				order = append(order, s)
			}
			groups[s] = append(groups[s], i)
		}
		_, err := b.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for _, s := range order {
				cs, ms := pick(counters, groups[s]), []string(nil)
				if delta != 0 {
					ms = pick(markers, groups[s])
				}
				keys, args := b.bumpCall(cs, ms, delta, leaseMS)
				bumpScript.Eval(ctx, p, keys, args...) // the text, not EVALSHA: a node may not have loaded it
			}
			return nil
		})
		return struct{}{}, err
	})
	return err
}

// pick returns list[i] for each i in idx.
func pick(list []string, idx []int) []string {
	out := make([]string, len(idx))
	for j, i := range idx {
		out[j] = list[i]
	}
	return out
}

// bumpCall lays out bumpScript's keys and arguments.
func (b *Backend) bumpCall(counters, markers []string, delta int64, leaseMS string) ([]string, []any) {
	keys := make([]string, 0, len(counters)+len(markers))
	for _, c := range counters {
		keys = append(keys, b.prefix+c)
	}
	if delta != 0 {
		for _, m := range markers {
			keys = append(keys, b.prefix+m)
		}
	}
	args := make([]any, 0, 3+len(counters))
	args = append(args, len(counters), delta, leaseMS)
	for range counters {
		args = append(args, rand.Int64N(1<<counterStartBits))
	}
	return keys, args
}

var _ region.TagBumper = (*Backend)(nil)
