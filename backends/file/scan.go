//go:build unix

package filebackend

import (
	"bytes"
	"context"

	bolt "go.etcd.io/bbolt"
)

// scanBatch is how many keys Scan yields at a time.
const scanBatch = 256

// Scan implements region.Scanner with a cursor of the values bucket: it
// seeks to prefix and walks the keys in order while they begin with it, a
// batch per read transaction (the file is not held while yield runs, so
// yield may call the backend), yielding copies of the live values. It does
// not count as an access in the LRU order.
func (b *Backend) Scan(ctx context.Context, prefix string, yield func(keys []string, values [][]byte) bool) error {
	pfx := []byte(prefix)
	from := pfx // where the next batch starts
	skipFirst := false
	for {
		var (
			keys []string
			vals [][]byte
			more bool
		)
		now := b.now().UnixNano()
		err := b.view(ctx, "scan", func(tx *bolt.Tx) error {
			vb := tx.Bucket(bucketValues)
			if vb == nil {
				return nil
			}
			c := vb.Cursor()
			k, rec := c.Seek(from)
			if skipFirst && k != nil && bytes.Equal(k, from) {
				k, rec = c.Next()
			}
			for ; k != nil && bytes.HasPrefix(k, pfx); k, rec = c.Next() {
				if len(keys) == scanBatch {
					more = true
					return nil
				}
				v, exp, ok := decode(string(k), rec)
				if !ok {
					b.corrupted.Add(1)
					continue
				}
				if !live(exp, now) {
					continue
				}
				keys = append(keys, string(k))
				vals = append(vals, bytes.Clone(v))
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(keys) > 0 && !yield(keys, vals) {
			return nil
		}
		if !more {
			return nil
		}
		from, skipFirst = []byte(keys[len(keys)-1]), true
	}
}
