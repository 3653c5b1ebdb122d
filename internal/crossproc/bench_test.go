package crossproc

import (
	"context"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack/v5"
	"gorm.io/gorm"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/internal/testharness"
)

// The hit path of the plugin over Redis on PostgreSQL, against its floor
// (a bare GET of the stored entry plus the msgpack decode of its payload)
// and against the uncached query. Run them together:
//
//	go test -run '^$' -bench 'Redis|PostgresUncached' -benchmem ./internal/crossproc/

// benchRow is a typical row: a few columns of common types.
type benchRow struct {
	ID        uint
	Name      string
	Category  string
	Price     int
	Stock     int
	Active    bool
	CreatedAt time.Time
	UpdatedAt time.Time
}

const benchPK = 500

// benchSetup opens a PostgreSQL database with 1000 rows and the plugin over
// the shared Redis, and returns it with a raw client and the backend prefix.
func benchSetup(b *testing.B) (*gorm.DB, *goredis.Client, string) {
	srv := testharness.SharedRedis(b)
	rc := newRedisClient(b, srv.Addr)
	prefix := uniquePrefix(b)
	db, _ := openPostgres(b, testharness.SharedPostgres(b).NewDatabase(b))
	must(b, db.AutoMigrate(&benchRow{}))
	rows := make([]benchRow, 1000)
	for i := range rows {
		rows[i] = benchRow{Name: fmt.Sprintf("row-%d", i), Category: fmt.Sprintf("c%d", i%40), Price: i * 3, Stock: i % 17, Active: i%2 == 0}
	}
	must(b, db.CreateInBatches(rows, 200).Error)
	usePlugin(b, db, sharedRegion(b, newBackend(b, rc, prefix)))
	return db, rc, prefix
}

func cachedRow(db *gorm.DB) (benchRow, error) {
	var r benchRow
	err := db.Scopes(dogpile.FromCache("default")).First(&r, benchPK).Error
	return r, err
}

// BenchmarkRedisFromCacheHit is a FromCache First by primary key answered
// from Redis.
func BenchmarkRedisFromCacheHit(b *testing.B) {
	db, _, _ := benchSetup(b)
	if _, err := cachedRow(db); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		r, err := cachedRow(db)
		if err != nil || r.ID != benchPK {
			b.Fatal(r, err)
		}
	}
}

// BenchmarkRedisRawGetDecode is the floor of the hit: a bare GET of the
// entry the region stored for that query, and the msgpack decode of its
// payload (the envelope and result headers skipped).
func BenchmarkRedisRawGetDecode(b *testing.B) {
	db, rc, prefix := benchSetup(b)
	want, err := cachedRow(db)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	keys, err := rc.Keys(ctx, prefix+":default:k:*").Result()
	if err != nil || len(keys) != 1 {
		b.Fatalf("entry keys %q (%v); want exactly one", keys, err)
	}
	key := keys[0]
	b.ReportAllocs()
	for b.Loop() {
		raw, err := rc.Get(ctx, key).Bytes()
		if err != nil {
			b.Fatal(err)
		}
		payload, err := entryPayload(raw)
		if err != nil {
			b.Fatal(err)
		}
		var r benchRow
		if err := msgpack.Unmarshal(payload, &r); err != nil || r.ID != want.ID || r.Name != want.Name {
			b.Fatal(r, err)
		}
	}
}

// BenchmarkPostgresUncached is the same First without the cache.
func BenchmarkPostgresUncached(b *testing.B) {
	db, _, _ := benchSetup(b)
	b.ReportAllocs()
	for b.Loop() {
		var r benchRow
		if err := db.First(&r, benchPK).Error; err != nil || r.ID != benchPK {
			b.Fatal(r, err)
		}
	}
}

// entryPayload skips the region's envelope (region/envelope.go, version 3:
// the version, five int64 fields, the tag stamps, the blob of tag names)
// and the plugin's result header (format, RowsAffected, times mode,
// destination mode) of a stored entry.
func entryPayload(b []byte) ([]byte, error) {
	const fixed = 1 + 5*8
	if len(b) < fixed || b[0] != 3 {
		return nil, fmt.Errorf("entry of unknown envelope format")
	}
	b = b[fixed:]
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return nil, fmt.Errorf("bad stamp count")
	}
	b = b[k:]
	for range n {
		l, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < l {
			return nil, fmt.Errorf("bad stamp")
		}
		b = b[k+int(l):]
	}
	if l, k := binary.Uvarint(b); k <= 0 || uint64(len(b)-k) < l {
		return nil, fmt.Errorf("bad tag names")
	} else {
		b = b[k+int(l):]
	}
	if len(b) < 1 || b[0] != 1 {
		return nil, fmt.Errorf("result of unknown format")
	}
	b = b[1:]
	if _, k := binary.Uvarint(b); k <= 0 {
		return nil, fmt.Errorf("bad rows affected")
	} else {
		b = b[k:]
	}
	// The destination is written by the codec (0) or, with the default
	// codec, as msgpack with structs as arrays (2); msgpack.Unmarshal reads
	// both.
	if len(b) < 2 || (b[1] != 0 && b[1] != 2) {
		return nil, fmt.Errorf("result not encoded by the codec")
	}
	return b[2:], nil
}
