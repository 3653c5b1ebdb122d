//go:build unix

package filebackend

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strconv"

	bolt "go.etcd.io/bbolt"
)

// The buckets of the file (see "File layout" in the package documentation).
var (
	bucketValues = []byte("v") // key → record
	bucketStamps = []byte("s") // key → access stamp (8 bytes, big-endian unix nanoseconds)
	bucketLRU    = []byte("t") // stamp ‖ key → nothing: keys by last access
	bucketExpiry = []byte("x") // expiry ‖ key → nothing: keys that expire, by expiry
	bucketMeta   = []byte("m") // formatKey, countKey, bytesKey
	formatKey    = []byte("format")
	countKey     = []byte("count")
	bytesKey     = []byte("bytes")
	formatValue  = []byte("dogpile-go/backends/file 1")
	allBuckets   = [][]byte{bucketValues, bucketStamps, bucketLRU, bucketExpiry, bucketMeta}
)

// A record is what the values bucket holds for a key:
//
//	[0]     recordVersion
//	[1:9]   expiry, unix nanoseconds, big-endian; 0: never
//	[9:13]  CRC-32C of the key, bytes [0:9] and the value
//	[13:]   the value
//
// A record whose version or checksum does not match is read as missing.
const (
	recordVersion = 1
	recordHeader  = 13
)

// entryOverhead approximates what an entry costs in the file beyond its key
// (stored four times: the record and three indexes) and its record: the
// index values and bbolt's element headers.
const entryOverhead = 96

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// weight is what an entry with key and record counts against the size
// bound.
func weight(key, rec []byte) int64 { return int64(4*len(key) + len(rec) + entryOverhead) }

// weightOf is the weight of an entry whose value is n bytes.
func weightOf(key string, n int) int64 { return int64(4*len(key) + recordHeader + n + entryOverhead) }

// encode returns the record of value under key, expiring at expiry.
func encode(key string, value []byte, expiry int64) []byte {
	rec := make([]byte, recordHeader+len(value))
	rec[0] = recordVersion
	binary.BigEndian.PutUint64(rec[1:9], uint64(expiry))
	copy(rec[recordHeader:], value)
	binary.BigEndian.PutUint32(rec[9:13], checksum(key, rec))
	return rec
}

func checksum(key string, rec []byte) uint32 {
	c := crc32.Update(0, castagnoli, []byte(key))
	c = crc32.Update(c, castagnoli, rec[:9])
	return crc32.Update(c, castagnoli, rec[recordHeader:])
}

// decode returns the value and expiry of rec, the record at key; ok is
// false when rec is not a sound record of key (damaged, or of another
// format). The value aliases rec.
func decode(key string, rec []byte) (value []byte, expiry int64, ok bool) {
	if len(rec) < recordHeader || rec[0] != recordVersion {
		return nil, 0, false
	}
	if binary.BigEndian.Uint32(rec[9:13]) != checksum(key, rec) {
		return nil, 0, false
	}
	return rec[recordHeader:], int64(binary.BigEndian.Uint64(rec[1:9])), true
}

// live reports whether a record expiring at expiry is alive at now.
func live(expiry, now int64) bool { return expiry == 0 || now < expiry }

// indexKey is stamp ‖ key: a key of the LRU or the expiry index.
func indexKey(at int64, key []byte) []byte {
	k := make([]byte, 8+len(key))
	binary.BigEndian.PutUint64(k, uint64(at))
	copy(k[8:], key)
	return k
}

func be64(v int64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, uint64(v))
	return b
}

// prepareLayout creates the buckets of a new file and checks the format
// marker of an existing one: a file of another format of this backend is
// emptied (its entries would be misses anyway); a bbolt file of someone
// else is refused (ErrForeign).
func prepareLayout(tx *bolt.Tx) error {
	if m := tx.Bucket(bucketMeta); m != nil {
		if bytes.Equal(m.Get(formatKey), formatValue) {
			for _, name := range allBuckets {
				if tx.Bucket(name) == nil {
					return errCorruptLayout
				}
			}
			return nil
		}
	}
	foreign := false
	_ = tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
		if !bytes.Equal(name, bucketMeta) && !isOurs(name) {
			foreign = true
		}
		return nil
	})
	if foreign {
		return ErrForeign
	}
	for _, name := range allBuckets {
		if tx.Bucket(name) != nil {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
		}
		if _, err := tx.CreateBucket(name); err != nil {
			return err
		}
	}
	return tx.Bucket(bucketMeta).Put(formatKey, bytes.Clone(formatValue))
}

var errCorruptLayout = errors.New("a bucket of the layout is missing")

func isOurs(name []byte) bool {
	for _, b := range allBuckets {
		if bytes.Equal(b, name) {
			return true
		}
	}
	return false
}

// wtx is one read-write transaction of the Backend, with the entry count
// and byte total of the file, which it writes back when done.
type wtx struct {
	b                           *Backend
	now                         int64
	values, stamps, lru, expiry *bolt.Bucket
	meta                        *bolt.Bucket
	count, bytes                int64
	evicted, expired            int64
}

func (b *Backend) begin(tx *bolt.Tx, now int64) (*wtx, error) {
	w := &wtx{b: b, now: now,
		values: tx.Bucket(bucketValues), stamps: tx.Bucket(bucketStamps),
		lru: tx.Bucket(bucketLRU), expiry: tx.Bucket(bucketExpiry), meta: tx.Bucket(bucketMeta)}
	if w.values == nil || w.stamps == nil || w.lru == nil || w.expiry == nil || w.meta == nil {
		return nil, errCorruptLayout
	}
	c, n := w.meta.Get(countKey), w.meta.Get(bytesKey)
	if c == nil && n == nil {
		return w, nil // a new file
	}
	if len(c) != 8 || len(n) != 8 {
		w.recount()
		return w, nil
	}
	w.count, w.bytes = int64(binary.BigEndian.Uint64(c)), int64(binary.BigEndian.Uint64(n))
	if w.count < 0 || w.bytes < 0 {
		w.recount()
	}
	return w, nil
}

// recount sets the totals from the values bucket, when they are unreadable.
func (w *wtx) recount() {
	w.count, w.bytes = 0, 0
	_ = w.values.ForEach(func(k, v []byte) error {
		w.count++
		w.bytes += weight(k, v)
		return nil
	})
}

// commit writes the totals back, after making room: expired entries first,
// then the least recently accessed, until the bounds hold.
func (w *wtx) commit() error {
	w.purge(purgeBatch)
	w.evict()
	if err := w.meta.Put(countKey, be64(w.count)); err != nil {
		return err
	}
	if err := w.meta.Put(bytesKey, be64(w.bytes)); err != nil {
		return err
	}
	w.b.evicted.Add(w.evicted)
	w.b.expiredN.Add(w.expired)
	return nil
}

// purgeBatch is how many expired entries each write removes beyond those
// the bounds require, so that expired entries do not pile up.
const purgeBatch = 32

// get returns the live value at key (aliasing the file), or nil.
func (w *wtx) get(key string) []byte {
	v, exp, ok := decode(key, w.values.Get([]byte(key)))
	if !ok || !live(exp, w.now) {
		return nil
	}
	return v
}

// put stores value at key until expiry (0: never), accessed now. An entry
// that alone exceeds the size bound is not stored, and the key's old value
// is removed: the key reads as missing, never as what it held before. It
// reports whether it stored.
func (w *wtx) put(key string, value []byte, expiry int64) (bool, error) {
	if err := w.remove([]byte(key)); err != nil {
		return false, err
	}
	if w.b.maxBytes > 0 && weightOf(key, len(value)) > w.b.maxBytes {
		return false, nil
	}
	k := []byte(key)
	rec := encode(key, value, expiry)
	if err := w.values.Put(k, rec); err != nil {
		return false, err
	}
	if err := w.stamps.Put(k, be64(w.now)); err != nil {
		return false, err
	}
	if err := w.lru.Put(indexKey(w.now, k), nil); err != nil {
		return false, err
	}
	if expiry != 0 {
		if err := w.expiry.Put(indexKey(expiry, k), nil); err != nil {
			return false, err
		}
	}
	w.count++
	w.bytes += weight(k, rec)
	return true, nil
}

// remove deletes key and its index entries, if it is there.
func (w *wtx) remove(k []byte) error {
	rec := w.values.Get(k)
	if rec == nil {
		return nil
	}
	w.count--
	w.bytes -= weight(k, rec)
	if _, exp, ok := decode(string(k), rec); ok && exp != 0 {
		if err := w.expiry.Delete(indexKey(exp, k)); err != nil {
			return err
		}
	}
	if err := w.values.Delete(k); err != nil {
		return err
	}
	if st := w.stamps.Get(k); len(st) == 8 {
		if err := w.lru.Delete(indexKey(int64(binary.BigEndian.Uint64(st)), k)); err != nil {
			return err
		}
	}
	return w.stamps.Delete(k)
}

// touch records that key was read at stamp, if the entry is still there
// and was not accessed later.
func (w *wtx) touch(key string, stamp int64) error {
	k := []byte(key)
	if w.values.Get(k) == nil {
		return nil
	}
	if st := w.stamps.Get(k); len(st) == 8 {
		old := int64(binary.BigEndian.Uint64(st))
		if old >= stamp {
			return nil
		}
		if err := w.lru.Delete(indexKey(old, k)); err != nil {
			return err
		}
	}
	if err := w.stamps.Put(k, be64(stamp)); err != nil {
		return err
	}
	return w.lru.Put(indexKey(stamp, k), nil)
}

// purge removes up to n entries that expired (all of them if n < 0).
func (w *wtx) purge(n int) {
	c := w.expiry.Cursor()
	for ik, _ := c.First(); ik != nil && n != 0; ik, _ = c.First() {
		if len(ik) < 8 {
			_ = c.Delete()
			continue
		}
		at := int64(binary.BigEndian.Uint64(ik))
		if live(at, w.now) {
			return
		}
		k := bytes.Clone(ik[8:])
		if !w.expiredAt(k, at) {
			// A stale index entry: the key was stored again.
			_ = w.expiry.Delete(bytes.Clone(ik))
			continue
		}
		_ = w.remove(k)
		w.expired++
		n--
	}
}

// expiredAt reports whether the record at k expires at exactly at.
func (w *wtx) expiredAt(k []byte, at int64) bool {
	_, exp, ok := decode(string(k), w.values.Get(k))
	return ok && exp == at
}

// over reports whether the file holds more than its bounds allow.
func (w *wtx) over() bool {
	return (w.b.maxEntries > 0 && w.count > w.b.maxEntries) || (w.b.maxBytes > 0 && w.bytes > w.b.maxBytes)
}

// evict removes entries until the bounds hold: expired ones first (the
// soonest expired first), then the least recently accessed.
func (w *wtx) evict() {
	if !w.over() {
		return
	}
	w.purge(-1)
	c := w.lru.Cursor()
	for w.over() {
		ik, _ := c.First()
		if ik == nil {
			// The index lost entries (a damaged file): count again
			// and drop what no index reaches.
			w.recount()
			if w.over() {
				w.dropUnindexed()
			}
			return
		}
		k := bytes.Clone(ik[min(8, len(ik)):])
		_ = w.lru.Delete(bytes.Clone(ik))
		if w.values.Get(k) != nil {
			_ = w.remove(k)
			w.evicted++
		}
	}
}

// dropUnindexed removes every entry, when the indexes cannot say which to
// keep; the file is then within its bounds.
func (w *wtx) dropUnindexed() {
	var keys [][]byte
	_ = w.values.ForEach(func(k, _ []byte) error {
		keys = append(keys, bytes.Clone(k))
		return nil
	})
	for _, k := range keys {
		_ = w.remove(k)
		w.evicted++
	}
}

// parseCounter reads a counter stored as decimal text, as Incr writes it.
func parseCounter(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 19 {
		return 0, false
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	return n, err == nil
}
