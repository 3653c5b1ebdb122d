//go:build unix

package filebackend

import (
	"context"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	bolt "go.etcd.io/bbolt"

	"github.com/dogpile-go/dogpile/region"
)

// The hit path of a region over the file backend, and bare bbolt reads of
// the same payload for comparison. Run them together (medians of 5 runs):
//
//	go test -run '^$' -bench . -count 5 -benchmem ./backends/file/

type benchUser struct {
	ID     int64
	Name   string
	Email  string
	Active bool
}

var benchValue = benchUser{ID: 42, Name: "Alice Liddell", Email: "alice@example.com", Active: true}

// BenchmarkRegionHit is region.GetOrCreate on a fresh hit, with the default
// hold: the process keeps the file open across hits, reopening it every
// hold (2ms). One read-only transaction reads the entry and the region's
// invalidation record.
func BenchmarkRegionHit(b *testing.B) { benchRegionHit(b, DefaultHold) }

// BenchmarkRegionHitOpenPerOperation is BenchmarkRegionHit with
// WithHold(0): the file is opened and closed for every hit (store lock,
// bbolt open, mmap, read, munmap, close).
func BenchmarkRegionHitOpenPerOperation(b *testing.B) { benchRegionHit(b, 0) }

func benchRegionHit(b *testing.B, hold time.Duration) {
	be := newTestBackend(b, WithHold(hold))
	r := region.New(be, region.WithName("bench"), region.WithExpiration(10*time.Minute))
	ctx := context.Background()
	var calls atomic.Int64
	create := func(context.Context) (benchUser, error) {
		calls.Add(1)
		return benchValue, nil
	}
	if _, err := region.GetOrCreate(ctx, r, "user:42", create); err != nil {
		b.Fatal(err)
	}
	opens := be.Stats().Opens
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		u, err := region.GetOrCreate(ctx, r, "user:42", create)
		if err != nil || u.ID != 42 {
			b.Fatal(u, err)
		}
	}
	b.StopTimer()
	if n := calls.Load(); n != 1 {
		b.Fatalf("creator ran %d times; want once, before the loop", n)
	}
	b.ReportMetric(float64(be.Stats().Opens-opens)/float64(b.N), "opens/op")
}

// BenchmarkRegionHitParallel is BenchmarkRegionHit from GOMAXPROCS
// goroutines at once.
func BenchmarkRegionHitParallel(b *testing.B) {
	be := newTestBackend(b)
	r := region.New(be, region.WithName("bench"), region.WithExpiration(10*time.Minute))
	ctx := context.Background()
	create := func(context.Context) (benchUser, error) { return benchValue, nil }
	if _, err := region.GetOrCreate(ctx, r, "user:42", create); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			u, err := region.GetOrCreate(ctx, r, "user:42", create)
			if err != nil || u.ID != 42 {
				b.Error(u, err)
				return
			}
		}
	})
}

// boltFile makes a bbolt file holding the msgpack payload under one key.
func boltFile(b *testing.B) (path string, key []byte) {
	path = filepath.Join(b.TempDir(), "bare.db")
	payload, err := msgpack.Marshal(benchValue)
	if err != nil {
		b.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	key = []byte("user:42")
	err = db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucket([]byte("v"))
		if err != nil {
			return err
		}
		return bk.Put(key, payload)
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	return path, key
}

// bareRead is one View that copies the payload out and decodes it.
func bareRead(b *testing.B, db *bolt.DB, key []byte) {
	var raw []byte
	err := db.View(func(tx *bolt.Tx) error {
		raw = append(raw, tx.Bucket([]byte("v")).Get(key)...)
		return nil
	})
	var u benchUser
	if err == nil {
		err = msgpack.Unmarshal(raw, &u)
	}
	if err != nil || u.ID != 42 {
		b.Fatal(u, err)
	}
}

// BenchmarkBoltRead is the floor: a View on a handle kept open, copying and
// decoding the payload. Only a process that owns the file alone can do it.
func BenchmarkBoltRead(b *testing.B) {
	path, key := boltFile(b)
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	b.ReportAllocs()
	for b.Loop() {
		bareRead(b, db, key)
	}
}

// BenchmarkBoltOpenRead is the same read with a read-only bbolt open and
// close around it: what sharing the file between processes costs per
// operation without a hold.
func BenchmarkBoltOpenRead(b *testing.B) {
	path, key := boltFile(b)
	b.ReportAllocs()
	for b.Loop() {
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
		if err != nil {
			b.Fatal(err)
		}
		bareRead(b, db, key)
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSet is one SetMulti of a 200-byte value (one read-write
// transaction, without fsync), over 1000 keys in turn, with the default
// hold.
func BenchmarkSet(b *testing.B) {
	be := newTestBackend(b)
	ctx := context.Background()
	value := make([]byte, 200)
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = "key:" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := be.SetMulti(ctx, []region.Item{{Key: keys[i%len(keys)], Value: value, TTL: time.Hour}}); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkRegionHitWithWriter is BenchmarkRegionHit while another backend
// on the directory (another process, as far as the locks are concerned)
// writes without pause: each hit may wait for the writer's hold.
func BenchmarkRegionHitWithWriter(b *testing.B) {
	dir := b.TempDir()
	be := openTestBackend(b, dir)
	writer := openTestBackend(b, dir)
	r := region.New(be, region.WithName("bench"), region.WithExpiration(10*time.Minute))
	ctx := context.Background()
	create := func(context.Context) (benchUser, error) { return benchValue, nil }
	if _, err := region.GetOrCreate(ctx, r, "user:42", create); err != nil {
		b.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	var writes atomic.Int64
	go func() {
		defer close(done)
		value := make([]byte, 200)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := writer.SetMulti(ctx, []region.Item{{Key: "w:" + strconv.Itoa(i%1000), Value: value}}); err != nil {
				b.Error(err)
				return
			}
			writes.Add(1)
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		u, err := region.GetOrCreate(ctx, r, "user:42", create)
		if err != nil || u.ID != 42 {
			b.Fatal(u, err)
		}
	}
	b.StopTimer()
	close(stop)
	<-done
	b.ReportMetric(float64(writes.Load())/float64(b.N), "writes/op")
}
