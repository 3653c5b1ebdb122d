package dogpile_test

// Column types the codec cannot carry, time zones, and scans that fail
// (issue 11): models, data and cases for the parity matrix (parity_test.go),
// and a direct test of each promise.
//
// What the drivers really return, as measured on this project's versions
// (mattn/go-sqlite3 v1.14.22, pgx v5.10.0 through database/sql), and so what
// each zone case exercises:
//
//   - SQLite, default DSN (the matrix's main database): a datetime column
//     holding text with an offset ("2024-03-01 10:00:00+05:30", which is
//     also how the driver writes a time.Time in any zone) comes back in
//     time.FixedZone("", offset): a fixed zone with an empty name. Text
//     with +00:00 comes back in time.UTC. Cases "Zones/fixed/…".
//   - SQLite with _loc=America/New_York in the DSN: every datetime value
//     comes back converted into the named zone America/New_York (the zero
//     instant too, as 0000-12-31 19:03:58 LMT). Cases "Zones/named/…".
//   - PostgreSQL, pgx's default (extended protocol, binary results): a
//     timestamptz comes back in time.Local whatever the session TimeZone,
//     the zero instant too. Cases "Zones/local/…" on the main database.
//   - PostgreSQL with a session TimeZone (timezone=America/St_Johns) and
//     text results (default_query_exec_mode=simple_protocol): pgx parses
//     the text PostgreSQL prints, so every timestamptz comes back in
//     time.FixedZone("", offset) with the session's offset of that date
//     (-03:30 in winter, -02:30 in summer, -03:30:52 LMT for year 1).
//     Cases "Zones/fixed/…".
//   - PostgreSQL with pgx's TimestamptzCodec{ScanLocation: America/New_York}
//     registered on each connection: every timestamptz comes back in the
//     named zone. Cases "Zones/named/…".
//
// Each zone kind runs on a database of its own kind (parityEnvs); no zone
// is set on the Go side after the driver returned it.

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/shopspring/decimal"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/internal/countpool"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

// ---------------------------------------------------------------------------
// Column types

// Money keeps its state in an unexported field, as many money types do. The
// codec writes exported fields only: before issue 11 a Money came back from
// every hit as Money{}.
type Money struct{ cents int64 }

func (m Money) Value() (driver.Value, error) { return m.cents, nil }

func (m *Money) Scan(src any) error {
	var s string
	switch v := src.(type) {
	case int64:
		m.cents = v
		return nil
	case nil:
		m.cents = 0
		return nil
	case string:
		s = v
	case []byte:
		s = string(v)
	default:
		return fmt.Errorf("money: cannot scan %T", src)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("money: %q is not a number of cents", s)
	}
	m.cents = n
	return nil
}

// Label holds an unexported pointer: nil for NULL.
type Label struct{ text *string }

func (l Label) Value() (driver.Value, error) {
	if l.text == nil {
		return nil, nil
	}
	return *l.text, nil
}

func (l *Label) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		l.text = nil
	case string:
		l.text = &v
	case []byte:
		s := string(v)
		l.text = &s
	default:
		return fmt.Errorf("label: cannot scan %T", src)
	}
	return nil
}

func labelOf(s string) Label { return Label{&s} }

// ParityPrefs is stored as JSON (serializer:json) and has exported fields
// only: the codec carries it.
type ParityPrefs struct {
	Theme string
	Sizes []int
	Flags map[string]bool
}

// ParitySecret is stored as JSON through its own MarshalJSON and
// UnmarshalJSON, and keeps its state in unexported fields.
type ParitySecret struct {
	code string
	n    int
}

func (s ParitySecret) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]any{"code": s.code, "n": s.n})
}

func (s *ParitySecret) UnmarshalJSON(b []byte) error {
	var v struct {
		Code string `json:"code"`
		N    int    `json:"n"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	s.code, s.n = v.Code, v.N
	return nil
}

// ParityAudit is embedded in models as an anonymous field.
type ParityAudit struct {
	Author string
	Remark *string
	Rev    int
}

// ParityAddress is embedded with gorm:"embedded;embeddedPrefix:addr_".
type ParityAddress struct {
	Street string
	Zip    *string
}

// ---------------------------------------------------------------------------
// Models on parity_exotics

// ParityExotic is every type above in one model: stored as rows (Money and
// Label cannot be carried), with decimals, JSON, embedded structs and an
// AfterFind hook. The type tags only tell GORM these are columns; the table
// is made by parityTypesSeed, with types per dialect.
type ParityExotic struct {
	ID       uint
	Name     string
	Price    Money               `gorm:"type:bigint"`
	Discount *Money              `gorm:"type:bigint"`
	Label    Label               `gorm:"type:text"`
	Amount   decimal.Decimal     `gorm:"type:numeric"`
	Tax      decimal.NullDecimal `gorm:"type:numeric"`
	Prefs    ParityPrefs         `gorm:"serializer:json"`
	Secret   ParitySecret        `gorm:"serializer:json"`
	ParityAudit
	Addr ParityAddress `gorm:"embedded;embeddedPrefix:addr_"`
	Code string

	Loaded string `gorm:"-"` // set by AfterFind
}

func (e *ParityExotic) AfterFind(*gorm.DB) error {
	parityAfterFind.Add(1)
	e.Loaded = "loaded:" + e.Name
	return nil
}

// The smaller models read one feature each from the same table.

type ParityMoneyRow struct {
	ID       uint
	Name     string
	Price    Money  `gorm:"type:bigint"`
	Discount *Money `gorm:"type:bigint"`
}

func (ParityMoneyRow) TableName() string { return "parity_exotics" }

type ParityLabelRow struct {
	ID    uint
	Label Label `gorm:"type:text"`
}

func (ParityLabelRow) TableName() string { return "parity_exotics" }

type ParityDecimalRow struct {
	ID     uint
	Amount decimal.Decimal     `gorm:"type:numeric"`
	Tax    decimal.NullDecimal `gorm:"type:numeric"`
}

func (ParityDecimalRow) TableName() string { return "parity_exotics" }

// ParityScaleRow reads decimals with trailing zeros: NullDecimal marshals
// itself as text only, decimal.Decimal also as binary.
type ParityScaleRow struct {
	ID   uint
	Rate decimal.NullDecimal `gorm:"type:numeric"`
	Cost decimal.Decimal     `gorm:"type:numeric"`
}

func (ParityScaleRow) TableName() string { return "parity_exotics" }

type ParityPrefsRow struct {
	ID    uint
	Prefs ParityPrefs `gorm:"serializer:json"`
}

func (ParityPrefsRow) TableName() string { return "parity_exotics" }

type ParitySecretRow struct {
	ID     uint
	Secret ParitySecret `gorm:"serializer:json"`
}

func (ParitySecretRow) TableName() string { return "parity_exotics" }

type ParityEmbeddedRow struct {
	ID   uint
	Name string
	ParityAudit
	Addr ParityAddress `gorm:"embedded;embeddedPrefix:addr_"`
}

func (ParityEmbeddedRow) TableName() string { return "parity_exotics" }

// ParityPriced is embedded in ParityEmbeddedMoneyRow: Money inside an
// embedded struct.
type ParityPriced struct {
	Price    Money  `gorm:"type:bigint"`
	Discount *Money `gorm:"type:bigint"`
}

type ParityEmbeddedMoneyRow struct {
	ID uint
	ParityPriced
	Addr ParityAddress `gorm:"embedded;embeddedPrefix:addr_"`
}

func (ParityEmbeddedMoneyRow) TableName() string { return "parity_exotics" }

// ParityPurchase belongs to a ParityMoneyRow (for Joins and Preload), and
// holds Money itself.
type ParityPurchase struct {
	ID       uint
	ExoticID uint
	Total    Money           `gorm:"type:bigint"`
	Exotic   *ParityMoneyRow `gorm:"foreignKey:ExoticID"`
}

// ParityExoticOwner has many ParityPurchase, for RelationshipCache.
type ParityExoticOwner struct {
	ID        uint
	Name      string
	Price     Money            `gorm:"type:bigint"`
	Purchases []ParityPurchase `gorm:"foreignKey:ExoticID"`
}

func (ParityExoticOwner) TableName() string { return "parity_exotics" }

// Destinations whose scan fails on some rows: code holds text that is not
// always a number. code is the table's last column, so that a failing row
// leaves no column after it unscanned (GORM reuses the values of unscanned
// columns from a pool, which would make its own answer vary).

type ParityCodeRow struct {
	ID   uint
	Name string
	Code int
}

func (ParityCodeRow) TableName() string { return "parity_exotics" }

type ParityCodeMoneyRow struct {
	ID    uint
	Price Money `gorm:"type:bigint"`
	Code  int
}

func (ParityCodeMoneyRow) TableName() string { return "parity_exotics" }

// ---------------------------------------------------------------------------
// Models on parity_zones

type ParityZoned struct {
	ID    uint
	Label string
	At    time.Time
	Maybe *time.Time
	Fee   int64
}

func (ParityZoned) TableName() string { return "parity_zones" }

// ParityZonedFee is stored as rows (Money), with the zoned times.
type ParityZonedFee struct {
	ID    uint
	At    time.Time
	Maybe *time.Time
	Fee   Money `gorm:"type:bigint"`
}

func (ParityZonedFee) TableName() string { return "parity_zones" }

// ---------------------------------------------------------------------------
// Data

const parityExotics = 6

var (
	ist   = time.FixedZone("IST", 5*3600+1800)
	pdt   = time.FixedZone("PDT", -7*3600)
	nepal = time.FixedZone("", 5*3600+45*60)
)

// parityZoneIDs are the ids of parity_zones' rows with a time that is not
// the zero instant; parityZeroIDs those of the rows with the zero instant.
var (
	parityZoneIDs = []uint{1, 2, 3, 4, 5, 6, 7}
	parityZeroIDs = []uint{10, 11}
)

// parityTypesSeed makes and fills parity_exotics and parity_zones. Neither
// is read by the other cases of the matrix.
func parityTypesSeed(t *testing.T, db *gorm.DB) {
	t.Helper()
	var ddl []string
	switch db.Dialector.Name() {
	case "sqlite":
		// text for the decimals: SQLite's NUMERIC affinity would keep 15
		// digits only.
		ddl = []string{
			`CREATE TABLE parity_exotics (id integer PRIMARY KEY, name text, price bigint, discount bigint,
				label text, amount text, tax text, prefs text, secret text, author text, remark text, rev integer,
				addr_street text, addr_zip text, rate text, cost text, code text)`,
			`CREATE TABLE parity_zones (id integer PRIMARY KEY, label text, at datetime NOT NULL, maybe datetime, fee bigint)`,
			`CREATE TABLE parity_purchases (id integer PRIMARY KEY, exotic_id bigint, total bigint)`,
		}
	case "postgres":
		ddl = []string{
			`CREATE TABLE parity_exotics (id bigint PRIMARY KEY, name text, price bigint, discount bigint,
				label text, amount numeric, tax numeric, prefs jsonb, secret jsonb, author text, remark text, rev integer,
				addr_street text, addr_zip text, rate numeric, cost numeric, code text)`,
			`CREATE TABLE parity_zones (id bigint PRIMARY KEY, label text, at timestamptz NOT NULL, maybe timestamptz, fee bigint)`,
			`CREATE TABLE parity_purchases (id bigint PRIMARY KEY, exotic_id bigint, total bigint)`,
		}
	default:
		t.Fatalf("dialect %q", db.Dialector.Name())
	}
	for _, s := range ddl {
		dbtest.Must(t, db.Exec(s).Error)
	}

	dec := decimal.RequireFromString
	note, zip := "checked", "75001"
	exotics := []ParityExotic{
		{ID: 1, Name: "e1", Price: Money{12345}, Label: labelOf("red"),
			Amount: dec("123456789012345678901234567890.123456789012345678901"),
			Tax:    decimal.NullDecimal{Decimal: dec("-0.000000000000000000000000001234"), Valid: true},
			Prefs:  ParityPrefs{Theme: "dark", Sizes: []int{1, 2, 3}, Flags: map[string]bool{"a": true, "b": false}},
			Secret: ParitySecret{code: "s3cr3t", n: 1}, ParityAudit: ParityAudit{Author: "alice", Rev: 1},
			Addr: ParityAddress{Street: "1 Main St", Zip: &zip}, Code: "7"},
		{ID: 2, Name: "e2", Price: Money{-1}, Discount: &Money{0}, Amount: dec("0"),
			Secret: ParitySecret{}, ParityAudit: ParityAudit{Author: "bob", Remark: &note, Rev: 2}, Code: "x2"},
		{ID: 3, Name: "e3", Price: Money{1 << 62}, Discount: &Money{-250}, Label: labelOf(""),
			Amount: dec("-0.00000000000000000001"), Tax: decimal.NullDecimal{Decimal: dec("1E+30"), Valid: true},
			Prefs:  ParityPrefs{Theme: "light", Sizes: []int{}, Flags: map[string]bool{}},
			Secret: ParitySecret{code: "ünïcødé", n: -3}, Addr: ParityAddress{Street: "2 Side St"}, Code: "9"},
		{ID: 4, Name: "e4", Price: Money{99}, Label: labelOf("ünïcødé"), Amount: dec("1.10"),
			Tax: decimal.NullDecimal{Decimal: dec("-7.000"), Valid: true}, Code: "bad4"},
		{ID: 5, Name: "e5", Price: Money{1}, Discount: &Money{1}, Label: labelOf("blue"),
			Amount: dec("3.14159265358979323846264338327950288419716939937510"), Code: "11"},
		{ID: 6, Name: "e6", Price: Money{-9_000_000_000_000_000}, Amount: dec("-1e-40"), Code: "12"},
	}
	dbtest.Must(t, db.Create(&exotics).Error)
	// Decimals as the database sends them back when they were not written
	// by decimal's Value (which drops trailing zeros): with their scale.
	for id, rc := range map[int][2]any{1: {"-7.000", "1.10"}, 2: {nil, "0.00"}, 3: {"100", "2.5000000000000000000000000000000000000000"}} {
		dbtest.Must(t, db.Exec("UPDATE parity_exotics SET rate = ?, cost = ? WHERE id = ?", rc[0], rc[1], id).Error)
	}
	// Purchase 5 belongs to no exotic row.
	purchases := []ParityPurchase{{ID: 1, ExoticID: 1, Total: Money{500}}, {ID: 2, ExoticID: 2, Total: Money{-20}},
		{ID: 3, ExoticID: 3, Total: Money{0}}, {ID: 4, ExoticID: 1, Total: Money{77}}, {ID: 5, ExoticID: 99, Total: Money{1}}}
	dbtest.Must(t, db.Omit("Exotic").Create(&purchases).Error)

	at := func(y int, mo time.Month, d, h, mi, s, ns int, loc *time.Location) time.Time {
		return time.Date(y, mo, d, h, mi, s, ns, loc)
	}
	ptr := func(t time.Time) *time.Time { return &t }
	ny, err := time.LoadLocation("America/New_York")
	dbtest.Must(t, err)
	zones := []ParityZoned{
		{ID: 1, Label: "IST and PDT", At: at(2024, 3, 1, 10, 0, 0, 0, ist), Maybe: ptr(at(2024, 7, 1, 12, 0, 0, 0, pdt)), Fee: 100},
		{ID: 2, Label: "UTC before New York's fall back", At: at(2024, 11, 3, 5, 59, 59, 999999000, time.UTC), Fee: -5},
		{ID: 3, Label: "UTC at New York's spring forward", At: at(2024, 3, 10, 7, 0, 0, 0, time.UTC), Maybe: ptr(at(2024, 3, 10, 1, 59, 59, 0, time.FixedZone("", -5*3600))), Fee: 0},
		// 4 is inserted as text, below.
		{ID: 5, Label: "New York (written) and +05:45", At: at(2024, 6, 15, 9, 0, 0, 123456000, ny), Maybe: ptr(at(1999, 12, 31, 23, 59, 59, 0, nepal)), Fee: 7},
		{ID: 6, Label: "UTC and Local", At: at(2024, 1, 1, 0, 0, 0, 0, time.UTC), Maybe: ptr(at(2024, 1, 1, 0, 0, 0, 0, time.Local)), Fee: 1},
		// Before time zones (local mean time in a named zone, an offset in
		// seconds from a PostgreSQL session), and after the last
		// transition of the zone database.
		{ID: 7, Label: "1800 and 2200", At: at(1800, 6, 1, 12, 0, 0, 0, time.UTC), Maybe: ptr(at(2200, 7, 1, 12, 0, 0, 0, time.UTC)), Fee: 8},
		// The zero instant, in UTC and in a fixed zone.
		{ID: 10, Label: "zero instant", At: time.Time{}, Maybe: ptr(time.Time{}.In(ist)), Fee: 3},
		{ID: 11, Label: "zero instant in IST", At: time.Time{}.In(ist), Fee: 4},
	}
	dbtest.Must(t, db.Create(&zones).Error)
	dbtest.Must(t, db.Exec(`INSERT INTO parity_zones (id, label, at, maybe, fee) VALUES (4, 'text with offsets', '2024-03-01 10:00:00+05:30', '2024-12-25 23:59:59.5-03:30', 42)`).Error)
}

// ---------------------------------------------------------------------------
// Databases whose driver returns times in zones

// parityEnv is one database the matrix runs cases on, with its data and
// its cases.
type parityEnv struct {
	db    *dbtest.DB
	seed  func(*testing.T, *gorm.DB)
	cases []parityCase
}

// parityEnvs returns the databases of the matrix for db's dialect: db
// itself with every case (its zone cases named by what its driver returns),
// and one database per zone kind the dialect's driver returns only when
// configured for it.
func parityEnvs(t *testing.T, db *dbtest.DB) []parityEnv {
	t.Helper()
	seedAll := func(t *testing.T, g *gorm.DB) { paritySeed(t, g); parityTypesSeed(t, g) }
	main := append(parityCases(), parityTypeCases()...)
	main = append(main, parityScanErrorCases()...)
	switch db.Dialect {
	case "sqlite":
		return []parityEnv{
			{db: db, seed: seedAll, cases: append(main, parityZoneCases("fixed")...)},
			{db: zonedSQLite(t, "America/New_York"), seed: parityTypesSeed, cases: parityZoneCases("named")},
		}
	case "postgres":
		return []parityEnv{
			{db: db, seed: seedAll, cases: append(main, parityZoneCases("local")...)},
			{db: zonedPostgresText(t, "America/St_Johns"), seed: parityTypesSeed, cases: parityZoneCases("fixed")},
			{db: zonedPostgresScanLocation(t, "America/New_York"), seed: parityTypesSeed, cases: parityZoneCases("named")},
		}
	}
	t.Fatalf("dialect %q", db.Dialect)
	return nil
}

// zonedSQLite opens a new SQLite database whose driver converts every
// datetime it returns into the zone loc (_loc).
func zonedSQLite(t *testing.T, loc string) *dbtest.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "zoned.db")
	sqlDB, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_busy_timeout=10000&_txlock=immediate&_loc="+loc)
	dbtest.Must(t, err)
	t.Cleanup(func() { _ = sqlDB.Close() })
	pool := &countpool.Pool{DB: sqlDB}
	g, err := gorm.Open(sqlite.New(sqlite.Config{Conn: pool}), &gorm.Config{Logger: logger.Discard})
	dbtest.Must(t, err)
	return &dbtest.DB{DB: g, Pool: pool, Dialect: "sqlite"}
}

// zonedPostgresText opens a new PostgreSQL database whose sessions have
// TimeZone tz and receive results as text: pgx then returns each
// timestamptz in a fixed zone of the offset PostgreSQL printed.
func zonedPostgresText(t *testing.T, tz string) *dbtest.DB {
	t.Helper()
	dsn := testharness.SharedPostgres(t).NewDatabase(t) + " timezone=" + tz + " default_query_exec_mode=simple_protocol"
	sqlDB, err := sql.Open("pgx", dsn)
	dbtest.Must(t, err)
	return zonedPostgresDB(t, sqlDB)
}

// zonedPostgresScanLocation opens a new PostgreSQL database on which pgx
// returns every timestamptz in the named zone loc.
func zonedPostgresScanLocation(t *testing.T, loc string) *dbtest.DB {
	t.Helper()
	zone, err := time.LoadLocation(loc)
	dbtest.Must(t, err)
	cfg, err := pgx.ParseConfig(testharness.SharedPostgres(t).NewDatabase(t))
	dbtest.Must(t, err)
	sqlDB := stdlib.OpenDB(*cfg, stdlib.OptionAfterConnect(func(_ context.Context, c *pgx.Conn) error {
		c.TypeMap().RegisterType(&pgtype.Type{Name: "timestamptz", OID: pgtype.TimestamptzOID, Codec: &pgtype.TimestamptzCodec{ScanLocation: zone}})
		return nil
	}))
	return zonedPostgresDB(t, sqlDB)
}

func zonedPostgresDB(t *testing.T, sqlDB *sql.DB) *dbtest.DB {
	t.Helper()
	t.Cleanup(func() { _ = sqlDB.Close() })
	pool := &countpool.Pool{DB: sqlDB}
	g, err := gorm.Open(postgres.New(postgres.Config{Conn: pool}), &gorm.Config{Logger: logger.Discard})
	dbtest.Must(t, err)
	return &dbtest.DB{DB: g, Pool: pool, Dialect: "postgres"}
}

// ---------------------------------------------------------------------------
// Cases

func parityTypeCases() []parityCase {
	return []parityCase{
		// Item 1: types with unexported state, stored as rows.
		{name: "Types/money", run: func(tx *gorm.DB) (any, int64, error) {
			var rs []ParityMoneyRow
			r := tx.Order("id").Find(&rs)
			return rs, r.RowsAffected, r.Error
		}, check: func(t *testing.T, dest any, _ int64) {
			rs := dest.([]ParityMoneyRow)
			if len(rs) != parityExotics || rs[0].Price.cents != 12345 || rs[2].Discount == nil || rs[2].Discount.cents != -250 || rs[0].Discount != nil {
				t.Errorf("sanity: money rows %+v", rs)
			}
		}},
		{name: "Types/money-first", run: func(tx *gorm.DB) (any, int64, error) {
			var r0 ParityMoneyRow
			r := tx.First(&r0, 3)
			return r0, r.RowsAffected, r.Error
		}, check: func(t *testing.T, dest any, _ int64) {
			if r := dest.(ParityMoneyRow); r.Price.cents != 1<<62 {
				t.Errorf("sanity: %+v", r)
			}
		}},
		{name: "Types/money-not-found", notFound: true, run: func(tx *gorm.DB) (any, int64, error) {
			var r0 ParityMoneyRow
			r := tx.First(&r0, 9999)
			return r0, r.RowsAffected, r.Error
		}},
		{name: "Types/money-pluck", run: func(tx *gorm.DB) (any, int64, error) {
			var ms []Money
			r := tx.Model(&ParityExotic{}).Order("id").Pluck("price", &ms)
			return ms, r.RowsAffected, r.Error
		}, check: func(t *testing.T, dest any, _ int64) {
			if ms := dest.([]Money); len(ms) != parityExotics || ms[5].cents != -9_000_000_000_000_000 {
				t.Errorf("sanity: %+v", ms)
			}
		}},
		{name: "Types/money-pointers-pluck", run: func(tx *gorm.DB) (any, int64, error) {
			var ms []*Money
			r := tx.Model(&ParityExotic{}).Order("id").Pluck("discount", &ms)
			return ms, r.RowsAffected, r.Error
		}},
		{name: "Types/money-raw", raw: true, run: func(tx *gorm.DB) (any, int64, error) {
			var rs []ParityMoneyRow
			r := tx.Raw("SELECT id, name, price, discount FROM parity_exotics WHERE id <= ? ORDER BY id", 4).Find(&rs)
			return rs, r.RowsAffected, r.Error
		}, check: wantRows(4)},
		{name: "Types/money-empty", run: func(tx *gorm.DB) (any, int64, error) {
			var rs []ParityMoneyRow
			r := tx.Where("id > ?", 9999).Find(&rs)
			return rs, r.RowsAffected, r.Error
		}, check: wantRows(0)},
		{name: "Types/money-embedded", run: func(tx *gorm.DB) (any, int64, error) {
			var rs []ParityEmbeddedMoneyRow
			r := tx.Order("id").Find(&rs)
			return rs, r.RowsAffected, r.Error
		}, check: func(t *testing.T, dest any, _ int64) {
			if rs := dest.([]ParityEmbeddedMoneyRow); len(rs) != parityExotics || rs[0].Price.cents != 12345 || rs[2].Discount.cents != -250 {
				t.Errorf("sanity: %+v", rs)
			}
		}},
		// A stored-as-rows answer with a joined association, scanned again
		// with the statement's joins on every hit.
		{name: "Types/money-joins", run: func(tx *gorm.DB) (any, int64, error) {
			var ps []ParityPurchase
			r := tx.Joins("Exotic").Order("parity_purchases.id").Find(&ps)
			return ps, r.RowsAffected, r.Error
		}, check: func(t *testing.T, dest any, _ int64) {
			ps := dest.([]ParityPurchase)
			if len(ps) != 5 || ps[0].Exotic == nil || ps[0].Exotic.Price.cents != 12345 || ps[1].Total.cents != -20 || ps[4].Exotic != nil {
				t.Errorf("sanity: join %+v", ps)
			}
		}},
		{name: "Types/money-preload", queries: 2, hitQ: 1, run: func(tx *gorm.DB) (any, int64, error) {
			var ps []ParityPurchase
			r := tx.Preload("Exotic").Order("id").Find(&ps)
			return ps, r.RowsAffected, r.Error
		}, check: func(t *testing.T, dest any, _ int64) {
			ps := dest.([]ParityPurchase)
			if len(ps) != 5 || ps[2].Exotic == nil || ps[2].Exotic.Price.cents != 1<<62 || ps[4].Exotic != nil {
				t.Errorf("sanity: preload %+v", ps)
			}
		}},
		// 6 rows in batches of 4: two statements.
		{name: "Types/money-find-in-batches", queries: 2, run: func(tx *gorm.DB) (any, int64, error) {
			var batch []ParityMoneyRow
			var all [][]ParityMoneyRow
			var nums []int
			r := tx.FindInBatches(&batch, 4, func(btx *gorm.DB, n int) error {
				all = append(all, append([]ParityMoneyRow(nil), batch...))
				nums = append(nums, n, int(btx.RowsAffected))
				return nil
			})
			return struct {
				Batches [][]ParityMoneyRow
				Nums    []int
			}{all, nums}, r.RowsAffected, r.Error
		}, check: wantRows(parityExotics)},
		{name: "Types/unexported-pointer", run: func(tx *gorm.DB) (any, int64, error) {
			var rs []ParityLabelRow
			r := tx.Order("id").Find(&rs)
			return rs, r.RowsAffected, r.Error
		}, check: func(t *testing.T, dest any, _ int64) {
			rs := dest.([]ParityLabelRow)
			if len(rs) != parityExotics || rs[0].Label.text == nil || *rs[0].Label.text != "red" || rs[1].Label.text != nil ||
				rs[2].Label.text == nil || *rs[2].Label.text != "" {
				t.Errorf("sanity: label rows %+v", rs)
			}
		}},
		{name: "Types/unexported-pointer-pluck", run: func(tx *gorm.DB) (any, int64, error) {
			var ls []Label
			r := tx.Model(&ParityExotic{}).Order("id").Pluck("label", &ls)
			return ls, r.RowsAffected, r.Error
		}},
		// Decimals marshal themselves: the codec carries them.
		{name: "Types/decimal", run: func(tx *gorm.DB) (any, int64, error) {
			var rs []ParityDecimalRow
			r := tx.Order("id").Find(&rs)
			return rs, r.RowsAffected, r.Error
		}, check: func(t *testing.T, dest any, _ int64) {
			rs := dest.([]ParityDecimalRow)
			if len(rs) != parityExotics || rs[0].Amount.String() != "123456789012345678901234567890.123456789012345678901" ||
				rs[5].Amount.Exponent() != -40 || !rs[0].Tax.Valid || rs[1].Tax.Valid {
				t.Errorf("sanity: decimal rows %+v", rs)
			}
		}},
		{name: "Types/decimal-scale", run: func(tx *gorm.DB) (any, int64, error) {
			var rs []ParityScaleRow
			r := tx.Where("id <= ?", 3).Order("id").Find(&rs)
			return rs, r.RowsAffected, r.Error
		}, check: func(t *testing.T, dest any, _ int64) {
			rs := dest.([]ParityScaleRow)
			if len(rs) != 3 || rs[0].Rate.Decimal.Exponent() != -3 || rs[0].Cost.Exponent() != -2 || rs[1].Rate.Valid {
				t.Errorf("sanity: %+v", rs)
			}
		}},
		{name: "Types/decimal-pluck", run: func(tx *gorm.DB) (any, int64, error) {
			var ds []decimal.Decimal
			r := tx.Model(&ParityExotic{}).Order("id").Pluck("amount", &ds)
			return ds, r.RowsAffected, r.Error
		}},
		{name: "Types/json-exported", run: func(tx *gorm.DB) (any, int64, error) {
			var rs []ParityPrefsRow
			r := tx.Order("id").Find(&rs)
			return rs, r.RowsAffected, r.Error
		}, check: func(t *testing.T, dest any, _ int64) {
			rs := dest.([]ParityPrefsRow)
			if len(rs) != parityExotics || rs[0].Prefs.Theme != "dark" || rs[1].Prefs.Sizes != nil || rs[2].Prefs.Sizes == nil {
				t.Errorf("sanity: prefs rows %+v", rs)
			}
		}},
		{name: "Types/json-unexported", run: func(tx *gorm.DB) (any, int64, error) {
			var rs []ParitySecretRow
			r := tx.Order("id").Find(&rs)
			return rs, r.RowsAffected, r.Error
		}, check: func(t *testing.T, dest any, _ int64) {
			if rs := dest.([]ParitySecretRow); len(rs) != parityExotics || rs[0].Secret.code != "s3cr3t" || rs[2].Secret.n != -3 {
				t.Errorf("sanity: secret rows %+v", rs)
			}
		}},
		{name: "Types/embedded", run: func(tx *gorm.DB) (any, int64, error) {
			var rs []ParityEmbeddedRow
			r := tx.Order("id").Find(&rs)
			return rs, r.RowsAffected, r.Error
		}, check: func(t *testing.T, dest any, _ int64) {
			rs := dest.([]ParityEmbeddedRow)
			if len(rs) != parityExotics || rs[0].Author != "alice" || rs[0].Addr.Zip == nil || *rs[0].Addr.Zip != "75001" || rs[1].Remark == nil {
				t.Errorf("sanity: embedded rows %+v", rs)
			}
		}},
		{name: "Types/embedded-where", run: func(tx *gorm.DB) (any, int64, error) {
			var rs []ParityEmbeddedRow
			r := tx.Where(&ParityEmbeddedRow{Addr: ParityAddress{Street: "2 Side St"}}).Find(&rs)
			return rs, r.RowsAffected, r.Error
		}, check: wantRows(1)},
		// Everything at once, stored as rows, with an AfterFind hook.
		{name: "Types/full-model", run: func(tx *gorm.DB) (any, int64, error) {
			var es []ParityExotic
			r := tx.Order("id").Find(&es)
			return es, r.RowsAffected, r.Error
		}, check: func(t *testing.T, dest any, _ int64) {
			es := dest.([]ParityExotic)
			if len(es) != parityExotics || es[0].Price.cents != 12345 || es[0].Secret.code != "s3cr3t" || es[0].Loaded != "loaded:e1" {
				t.Errorf("sanity: %+v", es)
			}
		}},
		{name: "Types/full-model-pointers", run: func(tx *gorm.DB) (any, int64, error) {
			var es []*ParityExotic
			r := tx.Where("id IN ?", []int{1, 3, 5}).Order("id").Find(&es)
			return es, r.RowsAffected, r.Error
		}, check: wantRows(3)},
		{name: "Types/full-model-first", run: func(tx *gorm.DB) (any, int64, error) {
			var e ParityExotic
			r := tx.First(&e, 1)
			return e, r.RowsAffected, r.Error
		}, check: wantRows(1)},
		{name: "Types/full-model-not-found", notFound: true, run: func(tx *gorm.DB) (any, int64, error) {
			var e ParityExotic
			r := tx.Where("name = ?", "nobody").Take(&e)
			return e, r.RowsAffected, r.Error
		}},
		// Maps of the table hold the driver's values (a decimal as text,
		// JSON as text or bytes).
		{name: "Types/full-table-maps", run: func(tx *gorm.DB) (any, int64, error) {
			var ms []map[string]any
			r := tx.Table("parity_exotics").Order("id").Find(&ms)
			return ms, r.RowsAffected, r.Error
		}, check: wantRows(parityExotics)},
		// Maps of a model are scanned through the model's field types (Money
		// and *Money here), then GORM keeps what their Value methods send.
		{name: "Types/money-maps-model", run: func(tx *gorm.DB) (any, int64, error) {
			var ms []map[string]any
			r := tx.Model(&ParityMoneyRow{}).Order("id").Find(&ms)
			return ms, r.RowsAffected, r.Error
		}, check: func(t *testing.T, dest any, _ int64) {
			ms := dest.([]map[string]any)
			if len(ms) != parityExotics || ms[0]["price"] != int64(12345) || ms[0]["discount"] != nil || ms[1]["discount"] != int64(0) {
				t.Errorf("sanity: %#v", ms)
			}
		}},
	}
}

// parityScanErrorCases fail while scanning (item 3): text that is not a
// number into an int, a Scanner's error, and NULL into an int of a Pluck
// (GORM scans NULL into a struct's int field as 0, without an error). On
// both dialects the driver returns the text as a string and NULL as nil,
// and database/sql's conversion (or the Scanner) fails on those rows only.
func parityScanErrorCases() []parityCase {
	return []parityCase{
		{name: "ScanError/text-into-int", scanErr: true, run: func(tx *gorm.DB) (any, int64, error) {
			var rs []ParityCodeRow
			r := tx.Order("id").Find(&rs)
			return rs, r.RowsAffected, r.Error
		}, check: func(t *testing.T, dest any, rows int64) {
			rs := dest.([]ParityCodeRow)
			if rows != parityExotics || len(rs) != parityExotics || rs[0].Code != 7 || rs[5].Code != 12 || rs[1].Name != "e2" {
				t.Errorf("sanity: GORM gave %d rows %+v", rows, rs)
			}
		}},
		{name: "ScanError/text-into-int-stored-as-rows", scanErr: true, run: func(tx *gorm.DB) (any, int64, error) {
			var rs []ParityCodeMoneyRow
			r := tx.Order("id").Find(&rs)
			return rs, r.RowsAffected, r.Error
		}, check: wantRows(parityExotics)},
		{name: "ScanError/first", scanErr: true, run: func(tx *gorm.DB) (any, int64, error) {
			var r0 ParityCodeRow
			r := tx.First(&r0, 4)
			return r0, r.RowsAffected, r.Error
		}, check: wantRows(1)},
		{name: "ScanError/scanner-error", scanErr: true, run: func(tx *gorm.DB) (any, int64, error) {
			var rs []ParityMoneyRow
			r := tx.Select("id", "name", "code AS price").Order("id").Find(&rs)
			return rs, r.RowsAffected, r.Error
		}, check: wantRows(parityExotics)},
		{name: "ScanError/pluck-text-into-int", scanErr: true, run: func(tx *gorm.DB) (any, int64, error) {
			var ns []int
			r := tx.Model(&ParityExotic{}).Order("id").Pluck("code", &ns)
			return ns, r.RowsAffected, r.Error
		}, check: wantRows(parityExotics)},
		// One column GORM has no field for, into a model: GORM scans the
		// column into the struct itself, which fails on every row (on both
		// dialects: a float64 on SQLite, numeric text on PostgreSQL).
		{name: "ScanError/avg-into-model", scanErr: true, run: func(tx *gorm.DB) (any, int64, error) {
			var us []ParityUser
			r := tx.Select("AVG(age) AS avgage").Group("name").Order("name").Find(&us)
			return us, r.RowsAffected, r.Error
		}, check: wantRows(parityUsers - parityUsers/9)},
		// Maps of a model are scanned into the model's field types, without
		// their serializer: GORM cannot scan the JSON text into ParityPrefs.
		{name: "ScanError/maps-of-model-with-serializer", scanErr: true, run: func(tx *gorm.DB) (any, int64, error) {
			var ms []map[string]any
			r := tx.Model(&ParityExotic{}).Order("id").Find(&ms)
			return ms, r.RowsAffected, r.Error
		}, check: wantRows(parityExotics)},
		{name: "ScanError/pluck-null-into-int", scanErr: true, run: func(tx *gorm.DB) (any, int64, error) {
			var ns []int64
			r := tx.Model(&ParityExotic{}).Order("id").Pluck("discount", &ns)
			return ns, r.RowsAffected, r.Error
		}, check: wantRows(parityExotics)},
	}
}

// parityZoneCases are the zone cases (item 2), named after the zones the
// database's driver returns (kind: fixed, named or local; see the top of
// this file).
func parityZoneCases(kind string) []parityCase {
	checkZones := func(t *testing.T, times []time.Time) {
		t.Helper()
		for _, tm := range times {
			if tm.IsZero() {
				continue
			}
			loc := tm.Location()
			ok := false
			switch kind {
			case "fixed":
				ok = loc != time.UTC && loc != time.Local
			case "named":
				ok = loc.String() == "America/New_York"
			case "local":
				ok = loc == time.Local
			}
			if ok {
				return
			}
		}
		t.Errorf("sanity: no time in a %s zone among %v", kind, times)
	}
	zonedTimes := func(zs []ParityZoned) []time.Time {
		var ts []time.Time
		for _, z := range zs {
			ts = append(ts, z.At)
			if z.Maybe != nil {
				ts = append(ts, *z.Maybe)
			}
		}
		return ts
	}
	p := "Zones/" + kind + "/"
	return []parityCase{
		{name: p + "slice", run: func(tx *gorm.DB) (any, int64, error) {
			var zs []ParityZoned
			r := tx.Where("id IN ?", parityZoneIDs).Order("id").Find(&zs)
			return zs, r.RowsAffected, r.Error
		}, check: func(t *testing.T, dest any, rows int64) {
			if rows != int64(len(parityZoneIDs)) {
				t.Errorf("sanity: %d rows", rows)
			}
			checkZones(t, zonedTimes(dest.([]ParityZoned)))
		}},
		{name: p + "first", run: func(tx *gorm.DB) (any, int64, error) {
			var z ParityZoned
			r := tx.First(&z, 4)
			return z, r.RowsAffected, r.Error
		}, check: func(t *testing.T, dest any, _ int64) {
			checkZones(t, zonedTimes([]ParityZoned{dest.(ParityZoned)}))
		}},
		{name: p + "pointers", run: func(tx *gorm.DB) (any, int64, error) {
			var zs []*ParityZoned
			r := tx.Where("id IN ?", parityZoneIDs).Order("id desc").Find(&zs)
			return zs, r.RowsAffected, r.Error
		}},
		{name: p + "pluck", run: func(tx *gorm.DB) (any, int64, error) {
			var ts []time.Time
			r := tx.Model(&ParityZoned{}).Where("id IN ?", parityZoneIDs).Order("id").Pluck("at", &ts)
			return ts, r.RowsAffected, r.Error
		}, check: func(t *testing.T, dest any, _ int64) { checkZones(t, dest.([]time.Time)) }},
		{name: p + "raw", raw: true, run: func(tx *gorm.DB) (any, int64, error) {
			var rs []struct {
				ID    uint
				At    time.Time
				Maybe *time.Time
			}
			r := tx.Raw("SELECT id, at, maybe FROM parity_zones WHERE id IN ? ORDER BY id", parityZoneIDs).Find(&rs)
			return rs, r.RowsAffected, r.Error
		}},
		{name: p + "maps", run: func(tx *gorm.DB) (any, int64, error) {
			var ms []map[string]any
			r := tx.Model(&ParityZoned{}).Where("id IN ?", parityZoneIDs).Order("id").Find(&ms)
			return ms, r.RowsAffected, r.Error
		}},
		{name: p + "map", run: func(tx *gorm.DB) (any, int64, error) {
			var m map[string]any
			r := tx.Model(&ParityZoned{}).Where("id = ?", 1).Find(&m)
			return m, r.RowsAffected, r.Error
		}},
		{name: p + "stored-as-rows", run: func(tx *gorm.DB) (any, int64, error) {
			var zs []ParityZonedFee
			r := tx.Where("id IN ?", parityZoneIDs).Order("id").Find(&zs)
			return zs, r.RowsAffected, r.Error
		}, check: func(t *testing.T, dest any, _ int64) {
			zs := dest.([]ParityZonedFee)
			var ts []time.Time
			for _, z := range zs {
				ts = append(ts, z.At)
			}
			checkZones(t, ts)
			if len(zs) == 0 || zs[0].Fee.cents != 100 {
				t.Errorf("sanity: %+v", zs)
			}
		}},
		// The zero instant, as the driver returns it (in the zone on
		// "fixed" and "named", in time.Local on "local", in UTC on SQLite
		// when it was written in UTC).
		{name: p + "zero-instant", run: func(tx *gorm.DB) (any, int64, error) {
			var zs []ParityZoned
			r := tx.Where("id IN ?", parityZeroIDs).Order("id").Find(&zs)
			return zs, r.RowsAffected, r.Error
		}, check: wantRows(int64(len(parityZeroIDs)))},
		{name: p + "zero-instant-stored-as-rows", run: func(tx *gorm.DB) (any, int64, error) {
			var zs []ParityZonedFee
			r := tx.Where("id IN ?", parityZeroIDs).Order("id").Find(&zs)
			return zs, r.RowsAffected, r.Error
		}, check: wantRows(int64(len(parityZeroIDs)))},
		{name: p + "zero-instant-maps", run: func(tx *gorm.DB) (any, int64, error) {
			var ms []map[string]any
			r := tx.Model(&ParityZoned{}).Where("id IN ?", parityZeroIDs).Order("id").Find(&ms)
			return ms, r.RowsAffected, r.Error
		}, check: wantRows(int64(len(parityZeroIDs)))},
	}
}

// ---------------------------------------------------------------------------
// Comparing errors

// parityErrDiff describes how got differs from want, as errors: their
// messages, and the types along their Unwrap chains.
func parityErrDiff(want, got error) string {
	if (want == nil) != (got == nil) {
		return fmt.Sprintf("want %v, got %v", want, got)
	}
	if want == nil {
		return ""
	}
	if want.Error() != got.Error() {
		return fmt.Sprintf("want %q, got %q", want.Error(), got.Error())
	}
	if w, g := errChain(want), errChain(got); !reflect.DeepEqual(w, g) {
		return fmt.Sprintf("same message, wrapped differently: want %v, got %v", w, g)
	}
	return ""
}

// errChain lists the types of err and of every error it wraps, depth first.
func errChain(err error) []string {
	var out []string
	var walk func(error, int)
	walk = func(e error, depth int) {
		if e == nil || depth > 32 {
			return
		}
		out = append(out, strings.Repeat(">", depth)+fmt.Sprintf("%T", e))
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, x := range u.Unwrap() {
				walk(x, depth+1)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap(), depth+1)
		}
	}
	walk(err, 0)
	return out
}

// parityCompareScanErr is parityCompare for a query whose scan fails: the
// error must be want's, message and wrapping, and the rest as parityCompare
// compares it.
func parityCompareScanErr(t *testing.T, what string, want, got parityResult) {
	t.Helper()
	if got.panic == "" {
		if d := parityErrDiff(want.err, got.err); d != "" {
			t.Errorf("%s: error differs: %s", what, d)
		}
	}
	want.err, got.err = nil, nil
	parityCompare(t, what, want, got, false)
}

// ---------------------------------------------------------------------------
// Direct tests

// typesSetup registers the plugin with one region per name on db, seeds
// parity_exotics and parity_zones, and returns the regions and a *gorm.DB
// over the same pool without the plugin.
func typesSetup(t *testing.T, db *dbtest.DB, names ...string) (map[string]*region.Region, *gorm.DB) {
	t.Helper()
	return paritySetupWith(t, db, parityTypesSeed, names...)
}

// TestExoticTypesHitEqualsMiss: destinations with column types the codec
// cannot carry (unexported fields, an unexported pointer, JSON through
// custom methods) and those it can (decimals, exported JSON, embedded
// structs) are served from the cache after the first read, and every hit
// equals the miss and GORM's own answer, value for value.
func TestExoticTypesHitEqualsMiss(t *testing.T) {
	reads := []struct {
		name string
		run  func(*gorm.DB) (any, int64, error)
		want func(t *testing.T, v any) // what the seeded rows hold
	}{
		{"money", func(tx *gorm.DB) (any, int64, error) {
			var rs []ParityMoneyRow
			r := tx.Order("id").Find(&rs)
			return rs, r.RowsAffected, r.Error
		}, func(t *testing.T, v any) {
			rs := v.([]ParityMoneyRow)
			var got []int64
			for _, r := range rs {
				got = append(got, r.Price.cents)
			}
			if want := []int64{12345, -1, 1 << 62, 99, 1, -9_000_000_000_000_000}; !reflect.DeepEqual(got, want) {
				t.Errorf("prices %v; want %v", got, want)
			}
			if rs[0].Discount != nil || rs[1].Discount == nil || rs[1].Discount.cents != 0 || rs[2].Discount.cents != -250 {
				t.Errorf("discounts %+v", rs)
			}
		}},
		{"money-first", func(tx *gorm.DB) (any, int64, error) {
			var r0 ParityMoneyRow
			r := tx.First(&r0, 1)
			return r0, r.RowsAffected, r.Error
		}, func(t *testing.T, v any) {
			if r := v.(ParityMoneyRow); r.Price.cents != 12345 || r.Name != "e1" {
				t.Errorf("row %+v; want e1 at 12345 cents", r)
			}
		}},
		{"money-pluck", func(tx *gorm.DB) (any, int64, error) {
			var ms []Money
			r := tx.Model(&ParityExotic{}).Order("id").Pluck("price", &ms)
			return ms, r.RowsAffected, r.Error
		}, func(t *testing.T, v any) {
			if ms := v.([]Money); len(ms) != parityExotics || ms[0] != (Money{12345}) || ms[2] != (Money{1 << 62}) {
				t.Errorf("prices %+v", ms)
			}
		}},
		{"unexported-pointer", func(tx *gorm.DB) (any, int64, error) {
			var rs []ParityLabelRow
			r := tx.Order("id").Find(&rs)
			return rs, r.RowsAffected, r.Error
		}, func(t *testing.T, v any) {
			var got []string
			for _, r := range v.([]ParityLabelRow) {
				if r.Label.text == nil {
					got = append(got, "<nil>")
				} else {
					got = append(got, strconv.Quote(*r.Label.text))
				}
			}
			if want := []string{`"red"`, "<nil>", `""`, `"ünïcødé"`, `"blue"`, "<nil>"}; !reflect.DeepEqual(got, want) {
				t.Errorf("labels %v; want %v", got, want)
			}
		}},
		{"json-unexported", func(tx *gorm.DB) (any, int64, error) {
			var rs []ParitySecretRow
			r := tx.Order("id").Find(&rs)
			return rs, r.RowsAffected, r.Error
		}, func(t *testing.T, v any) {
			rs := v.([]ParitySecretRow)
			if rs[0].Secret != (ParitySecret{"s3cr3t", 1}) || rs[2].Secret != (ParitySecret{"ünïcødé", -3}) {
				t.Errorf("secrets %+v", rs)
			}
		}},
		{"decimal", func(tx *gorm.DB) (any, int64, error) {
			var rs []ParityDecimalRow
			r := tx.Order("id").Find(&rs)
			return rs, r.RowsAffected, r.Error
		}, func(t *testing.T, v any) {
			var got []string
			for _, r := range v.([]ParityDecimalRow) {
				got = append(got, r.Amount.String())
			}
			want := []string{"123456789012345678901234567890.123456789012345678901", "0", "-0.00000000000000000001", "1.1",
				"3.1415926535897932384626433832795028841971693993751", "-0.0000000000000000000000000000000000000001"}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("amounts %q; want %q", got, want)
			}
		}},
		{"decimal-scale", func(tx *gorm.DB) (any, int64, error) {
			var rs []ParityScaleRow
			r := tx.Where("id <= ?", 3).Order("id").Find(&rs)
			return rs, r.RowsAffected, r.Error
		}, func(t *testing.T, v any) {
			var got []string
			for _, r := range v.([]ParityScaleRow) {
				got = append(got, fmt.Sprintf("%s(e%d)/%v %s(e%d)", r.Rate.Decimal.String(), r.Rate.Decimal.Exponent(), r.Rate.Valid, r.Cost.String(), r.Cost.Exponent()))
			}
			want := []string{"-7(e-3)/true 1.1(e-2)", "0(e0)/false 0(e-2)", "100(e0)/true 2.5(e-40)"}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("rates and costs %q; want %q", got, want)
			}
		}},
		{"full-model", func(tx *gorm.DB) (any, int64, error) {
			var es []ParityExotic
			r := tx.Order("id").Find(&es)
			return es, r.RowsAffected, r.Error
		}, func(t *testing.T, v any) {
			es := v.([]ParityExotic)
			if len(es) != parityExotics || es[0].Price.cents != 12345 || es[0].Label.text == nil || es[0].Secret.code != "s3cr3t" ||
				es[0].Author != "alice" || es[0].Addr.Street != "1 Main St" || es[0].Loaded != "loaded:e1" {
				t.Errorf("models %+v", es)
			}
		}},
	}
	names := []string{"rel"}
	for _, rd := range reads {
		names = append(names, rd.name)
	}
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		regions, bare := typesSetup(t, db, names...)
		for _, rd := range reads {
			t.Run(rd.name, func(t *testing.T) {
				r := regions[rd.name]
				scoped := func() *gorm.DB { return db.Scopes(fromCache(rd.name)) }
				plain := parityRun(db.Pool, func() *gorm.DB { return bare }, rd.run)
				if plain.err != nil || plain.panic != "" {
					t.Fatalf("GORM: %v %s", plain.err, plain.panic)
				}
				rd.want(t, plain.dest)

				miss := parityRun(db.Pool, scoped, rd.run)
				parityCompare(t, "miss", plain, miss, false)
				if miss.queries != 1 {
					t.Errorf("miss: %d statements; want 1", miss.queries)
				}
				for i := 1; i <= 3; i++ {
					before := r.Stats()
					hit := parityRun(db.Pool, scoped, rd.run)
					after := r.Stats()
					what := fmt.Sprintf("read %d", i+1)
					if hit.queries != 0 || after.Hits != before.Hits+1 {
						t.Errorf("%s: %d statements, region hits %d → %d; want a hit (0 statements, hits +1)", what, hit.queries, before.Hits, after.Hits)
					}
					parityCompare(t, what+" vs the miss", miss, hit, false)
					rd.want(t, hit.dest)
					scribble(reflect.ValueOf(hit.dest))
				}
				if s := r.Stats(); s.NotStored != 0 || s.DecodeFailures != 0 || s.Errors != 0 {
					t.Errorf("region stats %+v; want nothing unstored, no decode failures, no errors", s)
				}
			})
		}

		// Children with Money, preloaded through RelationshipCache: the
		// parents come from the database every time, the children from
		// the cache after the first read.
		t.Run("relationship-cache", func(t *testing.T) {
			r := regions["rel"]
			run := func(tx *gorm.DB) (any, int64, error) {
				var owners []ParityExoticOwner
				res := tx.Preload("Purchases", byID).Order("id").Find(&owners)
				return owners, res.RowsAffected, res.Error
			}
			scoped := func() *gorm.DB { return db.Scopes(dogpile.RelationshipCache("Purchases", "rel")) }
			plain := parityRun(db.Pool, func() *gorm.DB { return bare }, run)
			if plain.err != nil || plain.panic != "" {
				t.Fatalf("GORM: %v %s", plain.err, plain.panic)
			}
			owners := plain.dest.([]ParityExoticOwner)
			if len(owners) != parityExotics || len(owners[0].Purchases) != 2 || owners[0].Purchases[1].Total.cents != 77 || owners[1].Purchases[0].Total.cents != -20 {
				t.Fatalf("sanity: GORM gave %+v", owners)
			}
			first := parityRun(db.Pool, scoped, run)
			parityCompare(t, "first read", plain, first, false)
			if first.queries != 2 {
				t.Errorf("first read: %d statements; want 2", first.queries)
			}
			for i := 2; i <= 4; i++ {
				before := r.Stats()
				got := parityRun(db.Pool, scoped, run)
				after := r.Stats()
				what := fmt.Sprintf("read %d", i)
				parityCompare(t, what, plain, got, false)
				if got.queries > 1 || after.Hits <= before.Hits {
					t.Errorf("%s: %d statements, region hits %d → %d; want the parents' statement only and the children from the cache", what, got.queries, before.Hits, after.Hits)
				}
				scribble(reflect.ValueOf(got.dest))
			}
			if s := r.Stats(); s.NotStored != 0 || s.DecodeFailures != 0 || s.Errors != 0 {
				t.Errorf("region stats %+v; want nothing unstored, no decode failures, no errors", s)
			}
		})
	})
}

// TestZonedTimesCache: rows whose times the driver returns in a fixed or a
// named zone are cached (the second read is a hit and nothing is left
// unstored), and each time comes back Equal to GORM's, in a location of the
// same name.
func TestZonedTimesCache(t *testing.T) {
	type read struct {
		name string
		run  func(*gorm.DB) ([]time.Time, error)
	}
	timesOf := func(zs []ParityZoned) []time.Time {
		var ts []time.Time
		for _, z := range zs {
			ts = append(ts, z.At)
			if z.Maybe != nil {
				ts = append(ts, *z.Maybe)
			}
		}
		return ts
	}
	reads := []read{
		{"structs", func(tx *gorm.DB) ([]time.Time, error) {
			var zs []ParityZoned
			err := tx.Where("id IN ?", parityZoneIDs).Order("id").Find(&zs).Error
			return timesOf(zs), err
		}},
		{"first", func(tx *gorm.DB) ([]time.Time, error) {
			var z ParityZoned
			err := tx.First(&z, 1).Error
			return timesOf([]ParityZoned{z}), err
		}},
		{"pluck", func(tx *gorm.DB) ([]time.Time, error) {
			var ts []time.Time
			err := tx.Model(&ParityZoned{}).Where("id IN ?", parityZoneIDs).Order("id").Pluck("at", &ts).Error
			return ts, err
		}},
		{"maps", func(tx *gorm.DB) ([]time.Time, error) {
			var ms []map[string]any
			err := tx.Model(&ParityZoned{}).Where("id IN ?", parityZoneIDs).Order("id").Find(&ms).Error
			var ts []time.Time
			for _, m := range ms {
				for _, k := range []string{"at", "maybe"} {
					if tm, ok := m[k].(time.Time); ok {
						ts = append(ts, tm)
					}
				}
			}
			return ts, err
		}},
		{"stored-as-rows", func(tx *gorm.DB) ([]time.Time, error) {
			var zs []ParityZonedFee
			err := tx.Where("id IN ?", parityZoneIDs).Order("id").Find(&zs).Error
			var ts []time.Time
			for _, z := range zs {
				ts = append(ts, z.At)
				if z.Maybe != nil {
					ts = append(ts, *z.Maybe)
				}
			}
			return ts, err
		}},
		{"zero-instant", func(tx *gorm.DB) ([]time.Time, error) {
			var zs []ParityZoned
			err := tx.Where("id IN ?", parityZeroIDs).Order("id").Find(&zs).Error
			return timesOf(zs), err
		}},
	}
	names := make([]string, len(reads))
	for i, rd := range reads {
		names[i] = rd.name
	}
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		// The zones this dialect's driver returns, each on a database of
		// its own (see the top of this file).
		type zoned struct {
			kind string
			db   *dbtest.DB
		}
		var dbs []zoned
		switch db.Dialect {
		case "sqlite":
			dbs = []zoned{{"fixed", db}, {"named", zonedSQLite(t, "America/New_York")}}
		case "postgres":
			dbs = []zoned{{"fixed", zonedPostgresText(t, "America/St_Johns")}, {"named", zonedPostgresScanLocation(t, "America/New_York")}}
		}
		for _, z := range dbs {
			t.Run(z.kind, func(t *testing.T) {
				regions, bare := typesSetup(t, z.db, names...)
				for _, rd := range reads {
					t.Run(rd.name, func(t *testing.T) {
						r := regions[rd.name]
						want, err := rd.run(bare)
						dbtest.Must(t, err)
						zonedSeen := false
						for _, tm := range want {
							if l := tm.Location(); l != time.UTC && l != time.Local {
								zonedSeen = true
							}
						}
						if !zonedSeen {
							t.Fatalf("sanity: the driver returned no time in a zone: %v", want)
						}
						for i := 0; i < 4; i++ {
							z.db.Pool.Reset()
							before := r.Stats()
							got, err := rd.run(z.db.Scopes(fromCache(rd.name)))
							after := r.Stats()
							if err != nil {
								t.Fatalf("read %d: %v", i+1, err)
							}
							if i > 0 && (z.db.Pool.Queries() != 0 || after.Hits != before.Hits+1) {
								t.Errorf("read %d: %d statements, region hits %d → %d; want a hit", i+1, z.db.Pool.Queries(), before.Hits, after.Hits)
							}
							if after.NotStored != 0 {
								t.Errorf("read %d: region NotStored %d; want 0 (zoned rows are cached)", i+1, after.NotStored)
							}
							if len(got) != len(want) {
								t.Fatalf("read %d: %d times; want %d", i+1, len(got), len(want))
							}
							for j := range want {
								_, gotOff := got[j].Zone()
								_, wantOff := want[j].Zone()
								if !got[j].Equal(want[j]) || got[j].Location().String() != want[j].Location().String() || gotOff != wantOff {
									t.Errorf("read %d, time %d: got %s (offset %d); want %s (offset %d)", i+1, j, describeTime(got[j]), gotOff, describeTime(want[j]), wantOff)
								}
							}
						}
					})
				}
			})
		}
	})
}

// TestScanErrorParity: a query that fails while scanning gives, through
// FromCache, exactly what GORM gives (the rows scanned, RowsAffected and
// the error), stores nothing, and reaches the database on every call.
func TestScanErrorParity(t *testing.T) {
	cases := parityScanErrorCases()
	names := make([]string, len(cases))
	for i, c := range cases {
		names[i] = c.name
	}
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		regions, bare := paritySetupWith(t, db, func(t *testing.T, g *gorm.DB) { paritySeed(t, g); parityTypesSeed(t, g) }, names...)
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				r := regions[c.name]
				plain := parityRun(db.Pool, func() *gorm.DB { return bare }, c.run)
				if plain.panic != "" {
					t.Fatalf("GORM panicked: %s", plain.panic)
				}
				if plain.err == nil || errors.Is(plain.err, gorm.ErrRecordNotFound) {
					t.Fatalf("sanity: GORM's error %v; want a scan error", plain.err)
				}
				if !strings.Contains(plain.err.Error(), "Scan error") {
					t.Fatalf("sanity: GORM's error %q is not a scan error", plain.err)
				}
				for i := 1; i <= 4; i++ {
					before := r.Stats()
					got := parityRun(db.Pool, func() *gorm.DB { return db.Scopes(fromCache(c.name)) }, c.run)
					after := r.Stats()
					what := fmt.Sprintf("call %d", i)
					parityCompareScanErr(t, what, plain, got)
					if got.queries != 1 {
						t.Errorf("%s: %d statements; want 1 (nothing is stored)", what, got.queries)
					}
					if after.Hits != 0 || after.NotStored != before.NotStored+1 {
						t.Errorf("%s: region stats %+v (NotStored was %d); want no hits and one more answer not stored", what, after, before.NotStored)
					}
					scribble(reflect.ValueOf(got.dest))
				}
			})
		}
	})
}
