package memory

import (
	"context"
	"strconv"
	"strings"
)

// scanBatch is how many keys Scan yields at a time.
const scanBatch = 256

// Scan implements region.Scanner: it yields the keys that begin with prefix
// and copies of their values (a counter as its decimal text, as GetMulti
// returns it), scanBatch at a time, walking the whole cache. It does not
// count as a use of the entries in the eviction policy.
func (b *Backend) Scan(ctx context.Context, prefix string, yield func(keys []string, values [][]byte) bool) error {
	keys := make([]string, 0, scanBatch)
	vals := make([][]byte, 0, scanBatch)
	flush := func() bool {
		if len(keys) == 0 {
			return true
		}
		ok := yield(keys, vals)
		keys, vals = keys[:0], vals[:0]
		return ok
	}
	for k, e := range b.cache.All() {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		if e.counter != nil {
			vals = append(vals, strconv.AppendInt(nil, e.counter.Load(), 10))
		} else {
			vals = append(vals, append([]byte(nil), e.val...))
		}
		keys = append(keys, k)
		if len(keys) == scanBatch {
			if err := ctx.Err(); err != nil {
				return err
			}
			if !flush() {
				return nil
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	flush()
	return nil
}
