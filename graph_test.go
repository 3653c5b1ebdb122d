package dogpile_test

// Tests of the schema dependency graph (graph.go, issue 13): a write
// invalidates, besides the tables it names, what the database changes with
// it. Foreign-key actions (ON UPDATE / ON DELETE CASCADE, SET NULL, SET
// DEFAULT) transitively, here; views and materialized views in
// graph_views_test.go; triggers in graph_triggers_test.go. The graph is read
// from the catalog when the plugin is registered and read again after DDL
// (TestGraphRefreshAfterDDL).
//
// Every test runs on SQLite (foreign keys on) and PostgreSQL. Every check
// compares, value by value, the answer read through the cache with the one
// read through a second *gorm.DB on the same database without the plugin
// (graphEnv.plain, which bypasses the counting pool), and counts the
// statements the cached read sent: 0 before the write (a hit), exactly the
// statements of a miss after it.

import (
	"errors"
	"fmt"
	"strings"
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

// ---------------------------------------------------------------------------
// Harness

// graphSQLiteParams is dbtest.SQLite's DSN with foreign keys on: SQLite
// runs no foreign-key action without it.
const graphSQLiteParams = "_journal_mode=WAL&_busy_timeout=10000&_txlock=immediate&_foreign_keys=1"

func graphSQLite(t testing.TB) *dbtest.DB { return dbtest.OpenSQLite(t, graphSQLiteParams) }

// graphDialects opens a fresh database of each kind.
var graphDialects = []struct {
	name string
	open func(testing.TB) *dbtest.DB
}{{"sqlite", graphSQLite}, {"postgres", dbtest.Postgres}}

// graphEach runs fn as a subtest per database kind, each on a fresh database.
func graphEach(t *testing.T, fn func(t *testing.T, db *dbtest.DB)) {
	t.Helper()
	for _, d := range graphDialects {
		t.Run(d.name, func(t *testing.T) { fn(t, d.open(t)) })
	}
}

// graphEnv is a database with the plugin over one memory region, and a
// second *gorm.DB on the same *sql.DB without the plugin and past the
// counting pool: what the database holds.
type graphEnv struct {
	db    *dbtest.DB
	r     *region.Region
	plain *gorm.DB
}

// graphSetup runs ddl on db behind the plugin's back (the plugin must find
// it in the catalog when it is registered), then registers the plugin with
// opts over one memory region, "default".
func graphSetup(t *testing.T, db *dbtest.DB, ddl []string, opts ...dogpile.PluginOption) *graphEnv {
	t.Helper()
	return graphSetupRegions(t, db, ddl, []string{"default"}, opts...)
}

// graphSetupRegions is graphSetup with a memory region per name (e.r is
// "default"'s, or the first's).
func graphSetupRegions(t *testing.T, db *dbtest.DB, ddl, names []string, opts ...dogpile.PluginOption) *graphEnv {
	t.Helper()
	var d gorm.Dialector
	if db.Dialect == "postgres" {
		d = postgres.New(postgres.Config{Conn: db.Pool.DB})
	} else {
		d = sqlite.New(sqlite.Config{Conn: db.Pool.DB})
	}
	plain, err := gorm.Open(d, &gorm.Config{Logger: logger.Discard})
	dbtest.Must(t, err)
	e := &graphEnv{db: db, plain: plain}
	e.raw(t, ddl...)
	regions := make(map[string]*region.Region, len(names))
	for _, n := range names {
		regions[n] = region.New(memory.New(), region.WithExpiration(time.Hour))
	}
	e.r = regions[names[0]]
	if r, ok := regions["default"]; ok {
		e.r = r
	}
	dbtest.Must(t, db.Use(dogpile.New(regions, opts...)))
	return e
}

// graphSQL adapts portable DDL to db's dialect: {pk} is an auto-numbered
// primary key.
func graphSQL(db *dbtest.DB, q string) string {
	pk := "INTEGER PRIMARY KEY"
	if db.Dialect == "postgres" {
		pk = "BIGSERIAL PRIMARY KEY"
	}
	return strings.ReplaceAll(q, "{pk}", pk)
}

// raw runs statements on the raw *sql.DB: neither the plugin nor the
// counting pool sees them.
func (e *graphEnv) raw(t *testing.T, stmts ...string) {
	t.Helper()
	for _, s := range stmts {
		if _, err := e.db.Pool.DB.Exec(graphSQL(e.db, s)); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// exec runs a statement through the plugin's *gorm.DB (it sees it).
func (e *graphEnv) exec(t *testing.T, q string, args ...any) {
	t.Helper()
	dbtest.Must(t, e.db.Exec(graphSQL(e.db, q), args...).Error)
}

// graphProbe is a read, rendered as text for comparison (errors such as
// ErrRecordNotFound are part of the text).
type graphProbe struct {
	name string
	// miss is the number of statements the read sends when it is not
	// answered from the cache (0 means 1).
	miss int64
	// cached adds the cache scopes to tx; nil: FromCache("default").
	cached func(tx *gorm.DB) *gorm.DB
	run    func(t *testing.T, tx *gorm.DB) string
}

func (p graphProbe) misses() int64 {
	if p.miss == 0 {
		return 1
	}
	return p.miss
}

func (p graphProbe) through(tx *gorm.DB) *gorm.DB {
	if p.cached != nil {
		return p.cached(tx)
	}
	return tx.Scopes(dogpile.FromCache("default"))
}

// read runs p through the cache and returns its answer and the statements
// that reached the database.
func (e *graphEnv) read(t *testing.T, p graphProbe) (string, int64) {
	t.Helper()
	e.db.Pool.Reset()
	got := p.run(t, p.through(e.db.DB))
	return got, e.db.Pool.Queries()
}

// truth is p's answer from the database.
func (e *graphEnv) truth(t *testing.T, p graphProbe) string {
	t.Helper()
	return p.run(t, e.plain)
}

// warm caches each probe and checks that its next read is a hit that
// equals the database. It returns the answers by probe name.
func (e *graphEnv) warm(t *testing.T, ps ...graphProbe) map[string]string {
	t.Helper()
	out := make(map[string]string, len(ps))
	for _, p := range ps {
		e.read(t, p)
		got, n := e.read(t, p)
		if n != 0 {
			t.Fatalf("%s: second cached read sent %d statements; want a hit (0)", p.name, n)
		}
		if want := e.truth(t, p); got != want {
			t.Fatalf("%s: stale while warming: cached %q, database %q (an earlier write of this test was not followed)", p.name, got, want)
		}
		out[p.name] = got
	}
	return out
}

// fresh checks a probe whose answer the write changed: read through the
// cache it equals the database and went to the database (a miss), and the
// read after it is a hit again.
func (e *graphEnv) fresh(t *testing.T, p graphProbe, before string) {
	t.Helper()
	got, n := e.read(t, p)
	want := e.truth(t, p)
	if want == before {
		t.Fatalf("test bug: %s: the write did not change the database's answer (%q)", p.name, want)
	}
	if got != want {
		t.Errorf("%s: stale after the write: cached %q, database %q (before the write %q; the read sent %d statements)", p.name, got, want, before, n)
		return
	}
	if n != p.misses() {
		t.Errorf("%s: the read after the write sent %d statements; want %d (a miss)", p.name, n, p.misses())
	}
	if got2, n2 := e.read(t, p); n2 != 0 || got2 != want {
		t.Errorf("%s: the second read after the write = %q with %d statements; want %q from the cache (0)", p.name, got2, n2, want)
	}
}

// hit checks a probe the write did not concern: still a hit, still equal
// to the database.
func (e *graphEnv) hit(t *testing.T, p graphProbe, before string) {
	t.Helper()
	got, n := e.read(t, p)
	if want := e.truth(t, p); want != before {
		t.Fatalf("test bug: %s: the database's answer changed (%q, was %q)", p.name, want, before)
	}
	if got != before {
		t.Errorf("%s: cached %q; want %q", p.name, got, before)
	}
	if n != 0 {
		t.Errorf("%s: a write that does not concern it made its read send %d statements; want a hit (0)", p.name, n)
	}
}

// missed checks a probe whose answer the write did not change but that the
// write must have invalidated (a write of unknown tables invalidates every
// entry): a miss, equal to the database.
func (e *graphEnv) missed(t *testing.T, p graphProbe, before string) {
	t.Helper()
	got, n := e.read(t, p)
	want := e.truth(t, p)
	if got != want {
		t.Errorf("%s: cached %q, database %q", p.name, got, want)
	}
	if n != p.misses() {
		t.Errorf("%s: read after a write of unknown tables sent %d statements; want %d (every entry invalidated)", p.name, n, p.misses())
	}
}

// after checks a probe after a write that may or may not have changed its
// answer: fresh when the database's answer changed, else equal to it (hit
// or miss).
func (e *graphEnv) after(t *testing.T, p graphProbe, before string) {
	t.Helper()
	if e.truth(t, p) != before {
		e.fresh(t, p, before)
		return
	}
	e.equal(t, p)
}

// equal checks only that p through the cache equals the database; it
// returns whether the read was a hit.
func (e *graphEnv) equal(t *testing.T, p graphProbe) bool {
	t.Helper()
	got, n := e.read(t, p)
	if want := e.truth(t, p); got != want {
		t.Errorf("%s: cached %q, database %q", p.name, got, want)
	}
	return n == 0
}

func graphPtr(p *int) string {
	if p == nil {
		return "NULL"
	}
	return fmt.Sprint(*p)
}

// graphFirst renders the outcome of a First: "not found" for
// ErrRecordNotFound.
func graphFirst(t *testing.T, err error, render func() string) string {
	t.Helper()
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return "not found"
	}
	dbtest.Must(t, err)
	return render()
}

// ---------------------------------------------------------------------------
// Foreign-key actions: gr_members ← gr_profiles ← gr_badges
//
// gr_profiles.member_refer references gr_members.refer with the action under
// test; gr_badges.profile_refer references gr_profiles.member_refer ON
// UPDATE CASCADE ON DELETE CASCADE, so every action on gr_members reaches
// gr_badges through gr_profiles (two levels). gr_unrelated has no key.

type grMember struct {
	ID    uint
	Refer int
	Name  string
}

func (grMember) TableName() string { return "gr_members" }

type grProfile struct {
	ID          uint
	MemberRefer *int
	Bio         string
}

func (grProfile) TableName() string { return "gr_profiles" }

type grBadge struct {
	ID           uint
	ProfileRefer *int
	Label        string
}

func (grBadge) TableName() string { return "gr_badges" }

type grUnrelated struct {
	ID uint
	V  int
}

func (grUnrelated) TableName() string { return "gr_unrelated" }

// graphFKSchema is the members/profiles/badges schema with action on both
// ON UPDATE and ON DELETE of gr_profiles' key, and gr_unrelated.
func graphFKSchema(action string) []string {
	return []string{
		`CREATE TABLE gr_members (id {pk}, refer INTEGER NOT NULL UNIQUE, name TEXT NOT NULL DEFAULT '')`,
		`CREATE TABLE gr_profiles (id {pk}, member_refer INTEGER UNIQUE DEFAULT 0
			REFERENCES gr_members (refer) ON UPDATE ` + action + ` ON DELETE ` + action + `,
			bio TEXT NOT NULL DEFAULT '')`,
		`CREATE TABLE gr_badges (id {pk}, profile_refer INTEGER DEFAULT 0
			REFERENCES gr_profiles (member_refer) ON UPDATE CASCADE ON DELETE CASCADE,
			label TEXT NOT NULL DEFAULT '')`,
		graphUnrelatedSchema,
	}
}

// graphUnrelatedSchema is gr_unrelated: no key, no trigger, no view.
const graphUnrelatedSchema = `CREATE TABLE gr_unrelated (id {pk}, v INTEGER NOT NULL)`

// graphFKSeed fills the schema (behind the plugin: nothing is cached yet):
// member "nobody" with refer 0 (the default SET DEFAULT needs), member m
// with refer 1, its profile and the profile's badge; one unrelated row.
func graphFKSeed(t *testing.T, e *graphEnv) (m grMember, p grProfile, b grBadge) {
	t.Helper()
	one := 1
	dbtest.Must(t, e.plain.Create(&grMember{Refer: 0, Name: "nobody"}).Error)
	m = grMember{Refer: 1, Name: "m"}
	dbtest.Must(t, e.plain.Create(&m).Error)
	p = grProfile{MemberRefer: &one, Bio: "bio"}
	dbtest.Must(t, e.plain.Create(&p).Error)
	b = grBadge{ProfileRefer: &one, Label: "gold"}
	dbtest.Must(t, e.plain.Create(&b).Error)
	dbtest.Must(t, e.plain.Create(&grUnrelated{V: 7}).Error)
	return m, p, b
}

func graphProfileProbe(id uint) graphProbe {
	return graphProbe{name: "gr_profiles First", run: func(t *testing.T, tx *gorm.DB) string {
		var p grProfile
		err := tx.First(&p, "id = ?", id).Error
		return graphFirst(t, err, func() string { return fmt.Sprintf("profile %d member=%s bio=%s", p.ID, graphPtr(p.MemberRefer), p.Bio) })
	}}
}

func graphBadgeProbe(id uint) graphProbe {
	return graphProbe{name: "gr_badges First", run: func(t *testing.T, tx *gorm.DB) string {
		var b grBadge
		err := tx.First(&b, "id = ?", id).Error
		return graphFirst(t, err, func() string {
			return fmt.Sprintf("badge %d profile=%s label=%s", b.ID, graphPtr(b.ProfileRefer), b.Label)
		})
	}}
}

func graphMemberProbe(id uint) graphProbe {
	return graphProbe{name: "gr_members First", run: func(t *testing.T, tx *gorm.DB) string {
		var m grMember
		err := tx.First(&m, "id = ?", id).Error
		return graphFirst(t, err, func() string { return fmt.Sprintf("member %d refer=%d name=%s", m.ID, m.Refer, m.Name) })
	}}
}

var graphUnrelatedProbe = graphProbe{name: "gr_unrelated Find", run: func(t *testing.T, tx *gorm.DB) string {
	var us []grUnrelated
	dbtest.Must(t, tx.Order("id").Find(&us).Error)
	var sb strings.Builder
	for _, u := range us {
		fmt.Fprintf(&sb, "%d:%d;", u.ID, u.V)
	}
	return sb.String()
}}

// graphWritePath runs a write outside a transaction or inside
// db.Transaction; inTx checks, inside the transaction after the write, what
// the transaction itself reads through the cache.
type graphWritePath struct {
	name string
	tx   bool
	exec bool
}

var graphWritePaths = []graphWritePath{
	{name: "Model"},
	{name: "ModelInTransaction", tx: true},
	{name: "Exec", exec: true},
	{name: "ExecInTransaction", tx: true, exec: true},
}

// run runs write (model or exec per the path) on db or in a transaction,
// and then inTx in that transaction.
func (w graphWritePath) run(t *testing.T, db *gorm.DB, model, exec func(tx *gorm.DB) error, inTx func(tx *gorm.DB)) {
	t.Helper()
	write := model
	if w.exec {
		write = exec
	}
	if !w.tx {
		dbtest.Must(t, write(db))
		return
	}
	dbtest.Must(t, db.Transaction(func(tx *gorm.DB) error {
		if err := write(tx); err != nil {
			return err
		}
		if inTx != nil {
			inTx(tx)
		}
		return nil
	}))
}

// TestGraphFKActions: each foreign-key action (CASCADE, SET NULL, SET
// DEFAULT) on UPDATE and on DELETE of a member, written through a model
// method and through Exec, outside and inside a transaction: the cached
// profile (one level) and badge (two levels) are invalidated and read what
// the database now holds; the member read too; the unrelated table stays a
// hit. Inside the transaction, right after the write, a cached read of the
// profile reads the transaction's own write (from the database). Fails
// without the graph: the profile and badge stay cached with the old key.
func TestGraphFKActions(t *testing.T) {
	type event struct {
		name         string
		model, exec  func(m grMember) func(tx *gorm.DB) error
		memberAfter  string
		profileAfter map[string]string // by action
		badgeAfter   map[string]string
	}
	events := []event{
		{
			name: "Update",
			model: func(m grMember) func(*gorm.DB) error {
				return func(tx *gorm.DB) error { return tx.Model(&m).Update("Refer", 100).Error }
			},
			exec: func(m grMember) func(*gorm.DB) error {
				return func(tx *gorm.DB) error {
					return tx.Exec("UPDATE gr_members SET refer = ? WHERE id = ?", 100, m.ID).Error
				}
			},
			memberAfter: "member %d refer=100 name=m",
			profileAfter: map[string]string{
				"CASCADE": "profile %d member=100 bio=bio", "SET NULL": "profile %d member=NULL bio=bio", "SET DEFAULT": "profile %d member=0 bio=bio",
			},
			badgeAfter: map[string]string{
				"CASCADE": "badge %d profile=100 label=gold", "SET NULL": "badge %d profile=NULL label=gold", "SET DEFAULT": "badge %d profile=0 label=gold",
			},
		},
		{
			name:  "Delete",
			model: func(m grMember) func(*gorm.DB) error { return func(tx *gorm.DB) error { return tx.Delete(&m).Error } },
			exec: func(m grMember) func(*gorm.DB) error {
				return func(tx *gorm.DB) error { return tx.Exec("DELETE FROM gr_members WHERE id = ?", m.ID).Error }
			},
			memberAfter: "not found",
			profileAfter: map[string]string{
				"CASCADE": "not found", "SET NULL": "profile %d member=NULL bio=bio", "SET DEFAULT": "profile %d member=0 bio=bio",
			},
			badgeAfter: map[string]string{
				"CASCADE": "not found", "SET NULL": "badge %d profile=NULL label=gold", "SET DEFAULT": "badge %d profile=0 label=gold",
			},
		},
	}
	expect := func(format string, id uint) string {
		if strings.Contains(format, "%d") {
			return fmt.Sprintf(format, id)
		}
		return format
	}
	for _, d := range graphDialects {
		t.Run(d.name, func(t *testing.T) {
			for _, action := range []string{"CASCADE", "SET NULL", "SET DEFAULT"} {
				for _, ev := range events {
					for _, w := range graphWritePaths {
						name := strings.ReplaceAll(action, " ", "") + "/" + ev.name + "/" + w.name
						t.Run(name, func(t *testing.T) {
							db := d.open(t)
							e := graphSetup(t, db, graphFKSchema(action))
							m, p, b := graphFKSeed(t, e)
							member, profile, badge := graphMemberProbe(m.ID), graphProfileProbe(p.ID), graphBadgeProbe(b.ID)
							before := e.warm(t, member, profile, badge, graphUnrelatedProbe)

							wantProfile := expect(ev.profileAfter[action], p.ID)
							wantBadge := expect(ev.badgeAfter[action], b.ID)
							w.run(t, db.DB, ev.model(m), ev.exec(m), func(tx *gorm.DB) {
								// Read-your-writes through the foreign key: the
								// transaction changed gr_profiles through gr_members.
								db.Pool.Reset()
								got := profile.run(t, profile.through(tx))
								if n := db.Pool.Queries(); n != 1 {
									t.Errorf("in the transaction, after the write: the cached profile read sent %d statements; want 1 (the database)", n)
								}
								if got != wantProfile {
									t.Errorf("in the transaction, after the write: cached profile %q; want the transaction's own %q", got, wantProfile)
								}
							})

							if got := e.truth(t, profile); got != wantProfile {
								t.Fatalf("test bug: database profile %q; want %q", got, wantProfile)
							}
							if got := e.truth(t, badge); got != wantBadge {
								t.Fatalf("test bug: database badge %q; want %q", got, wantBadge)
							}
							if got := e.truth(t, member); got != expect(ev.memberAfter, m.ID) {
								t.Fatalf("test bug: database member %q; want %q", got, expect(ev.memberAfter, m.ID))
							}
							e.fresh(t, member, before[member.name])
							e.fresh(t, profile, before[profile.name])
							e.fresh(t, badge, before[badge.name])
							e.hit(t, graphUnrelatedProbe, before[graphUnrelatedProbe.name])
						})
					}
				}
			}
		})
	}
}

// TestGraphFKIssueExample is the example of the issue, through the model
// methods it names: ON UPDATE CASCADE rewrites the profile's member ref,
// and a cached First of the profile returns the new value; after a Delete
// with ON DELETE CASCADE the cached profile is gone (ErrRecordNotFound).
func TestGraphFKIssueExample(t *testing.T) {
	graphEach(t, func(t *testing.T, db *dbtest.DB) {
		e := graphSetup(t, db, graphFKSchema("CASCADE"))
		m, p, _ := graphFKSeed(t, e)
		cached := func() *gorm.DB { return db.Scopes(dogpile.FromCache("default")) }

		var profile grProfile
		dbtest.Must(t, cached().First(&profile, "id = ?", p.ID).Error)
		profile = grProfile{} // a destination with a key would add it to the query
		db.Pool.Reset()
		dbtest.Must(t, cached().First(&profile, "id = ?", p.ID).Error)
		if n := db.Pool.Queries(); n != 0 || graphPtr(profile.MemberRefer) != "1" {
			t.Fatalf("warm profile: %s with %d statements; want member 1 from the cache", graphPtr(profile.MemberRefer), n)
		}

		dbtest.Must(t, db.Model(&m).Update("Refer", 100).Error)
		profile = grProfile{}
		db.Pool.Reset()
		dbtest.Must(t, cached().First(&profile, "id = ?", p.ID).Error)
		if got := graphPtr(profile.MemberRefer); got != "100" {
			t.Errorf("after Update(Refer, 100) with ON UPDATE CASCADE: cached profile member = %s; want 100", got)
		}
		if n := db.Pool.Queries(); n != 1 {
			t.Errorf("after the update the cached First sent %d statements; want 1", n)
		}

		dbtest.Must(t, db.Delete(&m).Error)
		profile = grProfile{}
		db.Pool.Reset()
		err := cached().First(&profile, "id = ?", p.ID).Error
		if !errors.Is(err, gorm.ErrRecordNotFound) {
			t.Errorf("after Delete with ON DELETE CASCADE: cached First = %+v, %v; want ErrRecordNotFound", profile, err)
		}
		if n := db.Pool.Queries(); n != 1 {
			t.Errorf("after the delete the cached First sent %d statements; want 1", n)
		}
	})
}

// TestGraphFKPrecision: what the database does not change is not
// invalidated. A foreign key with no action (NO ACTION, RESTRICT) changes
// nothing in the referencing table; a Create of a parent row runs no action;
// a write to the referencing table changes nothing in the referenced one.
// The reads of the tables not changed stay hits. (Over-invalidation costs
// misses, not correctness: a failure here is a precision loss.)
func TestGraphFKPrecision(t *testing.T) {
	for _, d := range graphDialects {
		t.Run(d.name, func(t *testing.T) {
			for _, action := range []string{"NO ACTION", "RESTRICT"} {
				t.Run(strings.ReplaceAll(action, " ", ""), func(t *testing.T) {
					db := d.open(t)
					e := graphSetup(t, db, graphFKSchema(action))
					m, p, b := graphFKSeed(t, e)
					member, profile, badge := graphMemberProbe(m.ID), graphProfileProbe(p.ID), graphBadgeProbe(b.ID)
					before := e.warm(t, member, profile, badge)
					// A key change of a member no profile references, and a
					// delete of it: allowed, and no action runs.
					other := grMember{Refer: 50, Name: "other"}
					dbtest.Must(t, e.plain.Create(&other).Error)
					dbtest.Must(t, db.Model(&other).Update("Refer", 51).Error)
					e.hit(t, profile, before[profile.name])
					e.hit(t, badge, before[badge.name])
					dbtest.Must(t, db.Delete(&other).Error)
					e.hit(t, profile, before[profile.name])
					e.hit(t, badge, before[badge.name])
					// A change of a non-key column of the referenced member.
					dbtest.Must(t, db.Model(&m).Update("Name", "renamed").Error)
					e.fresh(t, member, before[member.name])
					e.hit(t, profile, before[profile.name])
					e.hit(t, badge, before[badge.name])
				})
			}
			t.Run("CascadeCreateAndChildWrites", func(t *testing.T) {
				db := d.open(t)
				e := graphSetup(t, db, graphFKSchema("CASCADE"))
				m, p, b := graphFKSeed(t, e)
				member, profile, badge := graphMemberProbe(m.ID), graphProfileProbe(p.ID), graphBadgeProbe(b.ID)
				before := e.warm(t, member, profile, badge)
				// An INSERT into the referenced table runs no action.
				dbtest.Must(t, db.Create(&grMember{Refer: 60, Name: "new"}).Error)
				e.hit(t, profile, before[profile.name])
				e.hit(t, badge, before[badge.name])
				e.equal(t, member) // a write to gr_members itself: a miss, cached again
				// A write to the referencing table (the badge's label) does
				// not change the referenced tables.
				dbtest.Must(t, db.Model(&b).Update("Label", "silver").Error)
				e.fresh(t, badge, before[badge.name])
				e.hit(t, profile, before[profile.name])
				e.hit(t, member, before[member.name])
			})
		})
	}
}

// ---------------------------------------------------------------------------
// RelationshipCache over a cascade from a third table:
// gr_authors has many gr_posts; gr_posts.category_code references
// gr_categories.code with the action under test. A write to gr_categories
// changes gr_posts rows, which are cached per author by
// RelationshipCache("Posts").

type grAuthor struct {
	ID    uint
	Name  string
	Posts []grPost `gorm:"foreignKey:AuthorID"`
}

func (grAuthor) TableName() string { return "gr_authors" }

type grPost struct {
	ID           uint
	AuthorID     uint
	CategoryCode *string
	Title        string
}

func (grPost) TableName() string { return "gr_posts" }

type grCategory struct {
	ID   uint
	Code string
}

func (grCategory) TableName() string { return "gr_categories" }

var graphAuthorsProbe = graphProbe{
	name: "gr_authors with Posts (RelationshipCache)",
	// The parent query is a hit; the posts of every author, reloaded.
	miss: 1,
	cached: func(tx *gorm.DB) *gorm.DB {
		return tx.Scopes(dogpile.FromCache("default"), dogpile.RelationshipCache("Posts", "default"))
	},
	run: func(t *testing.T, tx *gorm.DB) string {
		var as []grAuthor
		dbtest.Must(t, tx.Preload("Posts", func(db *gorm.DB) *gorm.DB { return db.Order("id") }).Order("id").Find(&as).Error)
		var sb strings.Builder
		for _, a := range as {
			fmt.Fprintf(&sb, "%d:%s[", a.ID, a.Name)
			for _, p := range a.Posts {
				c := "NULL"
				if p.CategoryCode != nil {
					c = *p.CategoryCode
				}
				fmt.Fprintf(&sb, "%d:%s:%s;", p.ID, c, p.Title)
			}
			sb.WriteString("] ")
		}
		return sb.String()
	},
}

// TestGraphFKRelationshipCache: posts preloaded through RelationshipCache
// (and the authors through FromCache) are reloaded after a cascade from
// gr_categories rewrites or deletes them: ON UPDATE CASCADE, ON DELETE
// CASCADE, ON DELETE SET NULL, through model methods and Exec, outside and
// inside a transaction. The authors entry stays a hit (exactly one
// statement: the posts). Fails without the graph: the cached posts keep
// the old category.
func TestGraphFKRelationshipCache(t *testing.T) {
	cases := []struct {
		name, onUpdate, onDelete string
		write                    func(tx *gorm.DB, c grCategory) error
		tx                       bool
	}{
		{"UpdateCascade/Model", "CASCADE", "NO ACTION", func(tx *gorm.DB, c grCategory) error { return tx.Model(&c).Update("Code", "go2").Error }, false},
		{"UpdateCascade/ExecInTransaction", "CASCADE", "NO ACTION", func(tx *gorm.DB, c grCategory) error {
			return tx.Exec("UPDATE gr_categories SET code = ? WHERE id = ?", "go2", c.ID).Error
		}, true},
		{"DeleteCascade/ModelInTransaction", "NO ACTION", "CASCADE", func(tx *gorm.DB, c grCategory) error { return tx.Delete(&c).Error }, true},
		{"DeleteCascade/Exec", "NO ACTION", "CASCADE", func(tx *gorm.DB, c grCategory) error {
			return tx.Exec("DELETE FROM gr_categories WHERE id = ?", c.ID).Error
		}, false},
		{"DeleteSetNull/Model", "NO ACTION", "SET NULL", func(tx *gorm.DB, c grCategory) error { return tx.Delete(&c).Error }, false},
		{"UpdateSetNull/ExecInTransaction", "SET NULL", "NO ACTION", func(tx *gorm.DB, c grCategory) error {
			return tx.Exec("UPDATE gr_categories SET code = ? WHERE id = ?", "go2", c.ID).Error
		}, true},
	}
	for _, d := range graphDialects {
		t.Run(d.name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					db := d.open(t)
					e := graphSetup(t, db, []string{
						`CREATE TABLE gr_authors (id {pk}, name TEXT NOT NULL)`,
						`CREATE TABLE gr_categories (id {pk}, code TEXT NOT NULL UNIQUE)`,
						`CREATE TABLE gr_posts (id {pk}, author_id INTEGER NOT NULL REFERENCES gr_authors (id),
							category_code TEXT REFERENCES gr_categories (code) ON UPDATE ` + c.onUpdate + ` ON DELETE ` + c.onDelete + `,
							title TEXT NOT NULL)`,
						graphUnrelatedSchema,
					})
					goCat, sqlCat := grCategory{Code: "go"}, grCategory{Code: "sql"}
					dbtest.Must(t, e.plain.Create(&goCat).Error)
					dbtest.Must(t, e.plain.Create(&sqlCat).Error)
					dbtest.Must(t, e.plain.Create(&grUnrelated{V: 1}).Error)
					for i, name := range []string{"ann", "bob", "cyd"} {
						a := grAuthor{Name: name}
						dbtest.Must(t, e.plain.Create(&a).Error)
						for j, code := range []string{"go", "sql", "go"}[:i+1] {
							code := code
							dbtest.Must(t, e.plain.Create(&grPost{AuthorID: a.ID, CategoryCode: &code, Title: fmt.Sprintf("%s-%d", name, j)}).Error)
						}
					}
					before := e.warm(t, graphAuthorsProbe, graphUnrelatedProbe)
					if c.tx {
						dbtest.Must(t, db.Transaction(func(tx *gorm.DB) error { return c.write(tx, goCat) }))
					} else {
						dbtest.Must(t, c.write(db.DB, goCat))
					}
					e.fresh(t, graphAuthorsProbe, before[graphAuthorsProbe.name])
					e.hit(t, graphUnrelatedProbe, before[graphUnrelatedProbe.name])
				})
			}
		})
	}
}
