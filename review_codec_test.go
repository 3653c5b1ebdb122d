package dogpile_test

import (
	"reflect"
	"testing"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/region"
)

// reviewBlob is read from a table made by hand: a blob, a large integer, and
// a Money (unexported state), so that the answer is stored as rows.
type reviewBlob struct {
	ID    uint
	Data  []byte
	Big   int64
	Price Money
}

func (reviewBlob) TableName() string { return "review_blobs" }

// reviewTimes holds times inside a map, as a serializer field may.
type reviewTimes struct {
	ID  uint
	Ats map[string]time.Time `gorm:"serializer:json"`
}

func (reviewTimes) TableName() string { return "review_times" }

// reviewSame runs run without the plugin, then four times with FromCache on
// region name, and fails when any cached answer differs from GORM's, or
// when nothing was ever served from the cache.
func reviewSame(t *testing.T, db *dbtest.DB, bare *gorm.DB, r *region.Region, name string, run func(*gorm.DB) (any, error)) {
	t.Helper()
	want, err := run(bare)
	if err != nil {
		t.Fatalf("without plugin: %v", err)
	}
	for i := range 4 {
		got, err := run(db.Scopes(dogpile.FromCache(name)))
		if err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("call %d differs from GORM's answer:\n%s", i+1, parityDiff(want, got))
		}
	}
	if s := r.Stats(); s.Hits == 0 {
		t.Errorf("no hits: %+v", s)
	}
}

// reviewBare opens a *gorm.DB without the plugin over db's pool.
func reviewBare(t *testing.T, db *dbtest.DB) *gorm.DB {
	t.Helper()
	cfg := &gorm.Config{Logger: logger.Discard}
	var bare *gorm.DB
	var err error
	switch db.Dialect {
	case "sqlite":
		bare, err = gorm.Open(sqlite.New(sqlite.Config{Conn: db.Pool}), cfg)
	default:
		bare, err = gorm.Open(postgres.New(postgres.Config{Conn: db.Pool}), cfg)
	}
	dbtest.Must(t, err)
	return bare
}

func reviewSetup(t *testing.T, db *dbtest.DB, codec region.Codec) (*gorm.DB, map[string]*region.Region) {
	t.Helper()
	regions := map[string]*region.Region{}
	for _, n := range []string{"rows", "maps", "codec", "zones"} {
		opts := []region.Option{region.WithName(n + "-" + db.Dialect), region.WithExpiration(time.Minute)}
		if codec != nil {
			opts = append(opts, region.WithCodec(codec))
		}
		regions[n] = region.New(memory.New(), opts...)
	}
	bare := reviewBare(t, db)
	dbtest.Must(t, db.Use(dogpile.New(regions)))
	blob := "blob"
	if db.Dialect == "postgres" {
		blob = "bytea"
	}
	dbtest.Must(t, db.Exec("CREATE TABLE review_blobs (id integer PRIMARY KEY, data "+blob+", big bigint, price bigint)").Error)
	dbtest.Must(t, db.Exec("INSERT INTO review_blobs (id, data, big, price) VALUES (1, ?, ?, 1999)",
		[]byte{0x00, 0xff, 0x10, 'A'}, int64(9007199254740993)).Error)
	return bare, regions
}

// Review finding: with region.JSONCodec (a codec the region package
// offers), every answer stored as rows or as map rows passes driver values
// through typedValue.V (an interface): JSON writes a []byte as base64 text,
// which fromTyped turns back into the bytes of that text, and an int64 as a
// number decoded into float64, which loses everything past 2^53. A hit
// then gives other bytes and another integer than the database holds.
func TestReviewJSONCodecRowsAndMaps(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		bare, regions := reviewSetup(t, db, region.JSONCodec{})
		t.Run("rows", func(t *testing.T) {
			reviewSame(t, db, bare, regions["rows"], "rows", func(tx *gorm.DB) (any, error) {
				var out []reviewBlob
				err := tx.Order("id").Find(&out).Error
				return out, err
			})
		})
		t.Run("maps", func(t *testing.T) {
			reviewSame(t, db, bare, regions["maps"], "maps", func(tx *gorm.DB) (any, error) {
				var out []map[string]any
				err := tx.Table("review_blobs").Select("id, data, big").Order("id").Find(&out).Error
				return out, err
			})
		})
	})
}

// Review finding: a time held in a map (a serializer field, whose JSON
// gives times in UTC or in a fixed zone) is not visited by the time
// walker, so the zone block does not record it, and msgpack gives it back
// in Local: a hit's times are in another location than GORM's.
func TestReviewTimesInMaps(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		bare, regions := reviewSetup(t, db, nil)
		dbtest.Must(t, db.Exec("CREATE TABLE review_times (id integer PRIMARY KEY, ats text)").Error)
		dbtest.Must(t, db.Exec(`INSERT INTO review_times (id, ats) VALUES (1, '{"utc":"2024-03-01T10:00:00Z","fixed":"2024-03-01T10:00:00+05:30"}')`).Error)
		reviewSame(t, db, bare, regions["zones"], "zones", func(tx *gorm.DB) (any, error) {
			var out []reviewTimes
			err := tx.Order("id").Find(&out).Error
			return out, err
		})
	})
}

// reviewAccount is a model as many applications write them: a field kept
// out of the API's JSON, and a time.
type reviewAccount struct {
	ID       uint
	Name     string
	Password string `json:"-"`
	At       time.Time
}

func (reviewAccount) TableName() string { return "review_accounts" }

// Review finding: StoredAsRows decides what the codec carries by msgpack's
// rules only (msgpack:"-", msgpack's marshalers), whatever the region's
// codec is. With region.JSONCodec a field tagged json:"-" (a password hash
// kept out of API output) is stored as nothing and every hit gives "";
// a time in Local is written with its offset and read back by
// encoding/json in UTC when Local's offset is zero (the times mode
// timesAsDecoded assumes msgpack's decoding, which gives Local).
func TestReviewJSONCodecStruct(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		bare, regions := reviewSetup(t, db, region.JSONCodec{})
		dbtest.Must(t, db.AutoMigrate(&reviewAccount{}))
		dbtest.Must(t, bare.Create(&reviewAccount{ID: 1, Name: "ann", Password: "hash", At: time.Date(2024, 3, 1, 10, 0, 0, 0, time.Local)}).Error)
		reviewSame(t, db, bare, regions["codec"], "codec", func(tx *gorm.DB) (any, error) {
			var out reviewAccount
			err := tx.First(&out, 1).Error
			return out, err
		})
	})
}
