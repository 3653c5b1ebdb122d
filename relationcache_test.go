package dogpile_test

// Tests of RelationshipCache: preloaded associations cached per parent.
//
// Every test runs on SQLite and PostgreSQL (dbtest.Each). The plugin's
// *gorm.DB runs over rcRecPool, which records the SQL and arguments of every
// query that reaches the database (the plugin's own per-parent loader sends
// its queries straight to the pool, past GORM's logger), so that tests can
// check which parents a preload query asked for: its IN list. The dbtest
// *gorm.DB over the same database, without the plugin, gives the answers to
// compare with.

import (
	"context"
	"database/sql"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/logger"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/internal/countpool"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/region"
)

// ---------------------------------------------------------------------------
// Models

type RcUser struct {
	ID        uint
	Name      string
	CreatedAt time.Time
	Profile   *RcProfile // has-one, no back-reference
	Posts     []RcPost   // has-many, back-referenced (RcPost.RcUser)
	Todos     []RcTodo   // has-many, no back-reference
	Roles     []RcRole   `gorm:"many2many:rc_user_roles"` // many2many
	Notes     []RcNote   `gorm:"polymorphic:Owner"`       // polymorphic has-many
}

// RcUserAlt reads rc_users with the other field shapes GORM preloads into:
// has-many into []*T, has-one into T.
type RcUserAlt struct {
	ID      uint
	Name    string
	Posts   []*RcPost `gorm:"foreignKey:RcUserID"`
	Profile RcProfile `gorm:"foreignKey:RcUserID"`
}

func (RcUserAlt) TableName() string { return "rc_users" }

// rcDoubledUsers is a FROM that gives every user twice: parents that share
// a key each get the children.
const rcDoubledUsers = "(SELECT * FROM rc_users UNION ALL SELECT * FROM rc_users) AS rc_users"

type RcProfile struct {
	ID       uint
	RcUserID uint
	Bio      string
}

type RcPost struct {
	ID        uint
	RcUserID  uint
	RcUser    *RcUser // belongs-to: makes rc_user_id a relationship key of rc_posts
	Title     string
	Published bool
	CreatedAt time.Time
	Comments  []RcComment
}

type RcComment struct {
	ID        uint
	RcPostID  uint
	RcPost    *RcPost // back-reference
	Body      string
	CreatedAt time.Time
}

type RcTodo struct {
	ID       uint
	RcUserID uint
	What     string
}

type RcRole struct {
	ID   uint
	Name string
}

type RcNote struct {
	ID        uint
	OwnerID   uint
	OwnerType string
	Body      string
}

type RcGroup struct {
	ID    uint
	Name  string
	Notes []RcNote `gorm:"polymorphic:Owner"`
}

const rcUsers = 20

// rcSeed fills the tables (through db, which has no plugin). Users 1..20:
//
//	user i has i%4 posts (none when i%4 == 0), published when the post's
//	index is even; post j has j%3 comments; a profile unless i%3 == 0;
//	i%2 todos; roles: users 1..10 get {1,3} or {2,4} appended in id order,
//	users 11..20 get them appended in reverse id order (the join table's
//	order differs from the roles' id order), and user 12 gets r3 too; a
//	note when i is even. Groups
//	1..3 have notes too, with owner ids that are also user ids.
func rcSeed(t *testing.T, db *gorm.DB) {
	t.Helper()
	dbtest.Must(t, db.AutoMigrate(&RcUser{}, &RcProfile{}, &RcPost{}, &RcComment{}, &RcTodo{}, &RcRole{}, &RcNote{}, &RcGroup{}))
	base := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	roles := []RcRole{{Name: "r1"}, {Name: "r2"}, {Name: "r3"}, {Name: "r4"}}
	dbtest.Must(t, db.Create(&roles).Error)
	for i := 1; i <= rcUsers; i++ {
		u := RcUser{Name: fmt.Sprintf("user%02d", i), CreatedAt: base.Add(time.Duration(i) * time.Hour)}
		dbtest.Must(t, db.Omit(clause.Associations).Create(&u).Error)
		if i%3 != 0 {
			dbtest.Must(t, db.Create(&RcProfile{RcUserID: u.ID, Bio: fmt.Sprintf("bio%d", i)}).Error)
		}
		for j := 0; j < i%4; j++ {
			p := RcPost{RcUserID: u.ID, Title: fmt.Sprintf("u%d-p%d", i, j), Published: j%2 == 0,
				CreatedAt: base.Add(time.Duration(i*10+j) * time.Minute).Add(time.Duration(j) * time.Microsecond)}
			dbtest.Must(t, db.Create(&p).Error)
			for k := 0; k < int(p.ID)%3; k++ {
				dbtest.Must(t, db.Create(&RcComment{RcPostID: p.ID, Body: fmt.Sprintf("c%d-%d", p.ID, k), CreatedAt: p.CreatedAt.Add(time.Second)}).Error)
			}
		}
		for j := 0; j < i%2; j++ {
			dbtest.Must(t, db.Create(&RcTodo{RcUserID: u.ID, What: fmt.Sprintf("todo%d", i)}).Error)
		}
		mine := []RcRole{roles[0], roles[2]}
		if i%2 == 0 {
			mine = []RcRole{roles[1], roles[3]}
		}
		if i > 10 {
			mine[0], mine[1] = mine[1], mine[0]
		}
		if i == 12 {
			mine = append(mine, roles[2]) // r3 between r2 and r4
		}
		dbtest.Must(t, db.Model(&u).Association("Roles").Append(mine))
		if i%2 == 0 {
			dbtest.Must(t, db.Create(&RcNote{OwnerID: u.ID, OwnerType: "rc_users", Body: fmt.Sprintf("unote%d", i)}).Error)
		}
	}
	for g := 1; g <= 3; g++ {
		grp := RcGroup{Name: fmt.Sprintf("g%d", g)}
		dbtest.Must(t, db.Omit(clause.Associations).Create(&grp).Error)
		dbtest.Must(t, db.Create(&RcNote{OwnerID: grp.ID, OwnerType: "rc_groups", Body: fmt.Sprintf("gnote%d", g)}).Error)
	}
}

// ---------------------------------------------------------------------------
// A pool that records the queries reaching the database

type rcStmt struct {
	sql  string
	args []any
}

type rcRecPool struct {
	*countpool.Pool
	mu    sync.Mutex
	stmts []rcStmt
}

func (p *rcRecPool) record(q string, args []any) {
	p.mu.Lock()
	p.stmts = append(p.stmts, rcStmt{q, append([]any(nil), args...)})
	p.mu.Unlock()
}

func (p *rcRecPool) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	p.record(q, args)
	return p.Pool.QueryContext(ctx, q, args...)
}

func (p *rcRecPool) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	p.record(q, args)
	return p.Pool.QueryRowContext(ctx, q, args...)
}

func (p *rcRecPool) BeginTx(ctx context.Context, opts *sql.TxOptions) (gorm.ConnPool, error) {
	tx, err := p.Pool.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &rcRecTx{ConnPool: tx, c: tx.(gorm.TxCommitter), p: p}, nil
}

type rcRecTx struct {
	gorm.ConnPool
	c gorm.TxCommitter
	p *rcRecPool
}

func (t *rcRecTx) Commit() error   { return t.c.Commit() }
func (t *rcRecTx) Rollback() error { return t.c.Rollback() }

func (t *rcRecTx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	t.p.record(q, args)
	return t.ConnPool.QueryContext(ctx, q, args...)
}

func (t *rcRecTx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	t.p.record(q, args)
	return t.ConnPool.QueryRowContext(ctx, q, args...)
}

func (p *rcRecPool) reset() {
	p.mu.Lock()
	p.stmts = nil
	p.mu.Unlock()
}

var rcUnquote = strings.NewReplacer("`", "", `"`, "")

// on returns the recorded queries that select from table.
func (p *rcRecPool) on(table string) []rcStmt {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []rcStmt
	for _, s := range p.stmts {
		q := rcUnquote.Replace(s.sql)
		if strings.Contains(q, "FROM "+table+" ") || strings.HasSuffix(q, "FROM "+table) {
			out = append(out, s)
		}
	}
	return out
}

// all returns every recorded query, for failure messages.
func (p *rcRecPool) all() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for _, s := range p.stmts {
		fmt.Fprintf(&b, "\n      %s %v", s.sql, s.args)
	}
	return b.String()
}

// rcIN returns the values of the IN list (or "= ?") on column col
// ("table.column") of s, sorted.
func rcIN(t *testing.T, s rcStmt, col string) []int64 {
	t.Helper()
	q := rcUnquote.Replace(s.sql)
	at := strings.Index(q, col+" IN (")
	n := 0
	if at >= 0 {
		end := strings.IndexByte(q[at:], ')')
		n = strings.Count(q[at:at+end], "?") + strings.Count(q[at:at+end], "$")
	} else if at = strings.Index(q, col+" = "); at >= 0 {
		n = 1
	} else {
		t.Fatalf("no IN on %s in %s", col, s.sql)
	}
	first := strings.Count(q[:at], "?") + strings.Count(q[:at], "$")
	if first+n > len(s.args) {
		t.Fatalf("IN on %s at argument %d+%d of %d: %s %v", col, first, n, len(s.args), s.sql, s.args)
	}
	out := make([]int64, 0, n)
	for _, a := range s.args[first : first+n] {
		v, err := strconv.ParseInt(fmt.Sprint(reflect.Indirect(reflect.ValueOf(a)).Interface()), 10, 64)
		if err != nil {
			t.Fatalf("IN value %v (%T): %v", a, a, err)
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// rcINs returns the IN lists of the queries on table's column col, one per
// query.
func (p *rcRecPool) ins(t *testing.T, table, col string) [][]int64 {
	t.Helper()
	var out [][]int64
	for _, s := range p.on(table) {
		out = append(out, rcIN(t, s, table+"."+col))
	}
	return out
}

func rcRange(from, to int64) []int64 {
	var out []int64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

// ---------------------------------------------------------------------------
// Setup

type rcEnv struct {
	db      *dbtest.DB // the test database; db.DB has no plugin (the "bare" GORM)
	cached  *gorm.DB   // the plugin's *gorm.DB, over rec
	rec     *rcRecPool
	regions map[string]*region.Region
}

func (e *rcEnv) bare() *gorm.DB { return e.db.DB }

// rcSetup seeds the database and opens the plugin's *gorm.DB with one fresh
// region per name ("default" when none is given).
func rcSetup(t *testing.T, db *dbtest.DB, names ...string) *rcEnv {
	t.Helper()
	if len(names) == 0 {
		names = []string{"default"}
	}
	rcSeed(t, db.DB)
	rec := &rcRecPool{Pool: db.Pool}
	cfg := &gorm.Config{Logger: logger.Discard}
	var cached *gorm.DB
	var err error
	switch db.Dialect {
	case "sqlite":
		cached, err = gorm.Open(sqlite.New(sqlite.Config{Conn: rec}), cfg)
	case "postgres":
		cached, err = gorm.Open(postgres.New(postgres.Config{Conn: rec}), cfg)
	default:
		t.Fatalf("dialect %q", db.Dialect)
	}
	dbtest.Must(t, err)
	regions := make(map[string]*region.Region, len(names))
	for _, n := range names {
		regions[n] = region.New(memory.New(), region.WithExpiration(time.Minute), region.WithName(n))
	}
	dbtest.Must(t, cached.Use(dogpile.New(regions)))
	rec.reset()
	db.Pool.Reset()
	return &rcEnv{db: db, cached: cached, rec: rec, regions: regions}
}

func rcByID(db *gorm.DB) *gorm.DB { return db.Order("id") }

// rcRC is RelationshipCache in the "default" region.
func rcRC(path string) func(*gorm.DB) *gorm.DB { return dogpile.RelationshipCache(path, "default") }

// rcUsersPosts loads users from..to with their posts in id order.
func rcUsersPosts(tx *gorm.DB, from, to int) ([]RcUser, error) {
	var us []RcUser
	err := tx.Preload("Posts", rcByID).Where("id BETWEEN ? AND ?", from, to).Order("id").Find(&us).Error
	return us, err
}

// rcSame fails the test unless got equals want value for value.
func rcSame(t *testing.T, what string, want, got any) {
	t.Helper()
	if !reflect.DeepEqual(want, got) {
		var diffs []string
		rcDiffValue(&diffs, "", reflect.ValueOf(want), reflect.ValueOf(got))
		if len(diffs) > 12 {
			diffs = append(diffs[:12], fmt.Sprintf("… %d more", len(diffs)-12))
		}
		t.Errorf("%s: answer differs from GORM's:\n      %s", what, strings.Join(diffs, "\n      "))
	}
}

// rcDiffValue lists the paths where a and b differ.
func rcDiffValue(out *[]string, path string, a, b reflect.Value) {
	if !a.IsValid() || !b.IsValid() {
		if a.IsValid() != b.IsValid() {
			*out = append(*out, fmt.Sprintf("%s: want %v, got %v", path, a, b))
		}
		return
	}
	if a.Type() != b.Type() {
		*out = append(*out, fmt.Sprintf("%s: type %s vs %s", path, a.Type(), b.Type()))
		return
	}
	if a.Type() == reflect.TypeOf(time.Time{}) {
		ta, tb := a.Interface().(time.Time), b.Interface().(time.Time)
		if !reflect.DeepEqual(ta, tb) {
			*out = append(*out, fmt.Sprintf("%s: want %s (%s), got %s (%s)", path, ta, ta.Location(), tb, tb.Location()))
		}
		return
	}
	switch a.Kind() {
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() || b.IsNil() {
			if a.IsNil() != b.IsNil() {
				*out = append(*out, fmt.Sprintf("%s: want %#v, got %#v", path, a.Interface(), b.Interface()))
			}
			return
		}
		rcDiffValue(out, path, a.Elem(), b.Elem())
	case reflect.Struct:
		for i := 0; i < a.NumField(); i++ {
			rcDiffValue(out, path+"."+a.Type().Field(i).Name, a.Field(i), b.Field(i))
		}
	case reflect.Slice:
		if a.IsNil() != b.IsNil() {
			*out = append(*out, fmt.Sprintf("%s: nil %v vs %v", path, a.IsNil(), b.IsNil()))
		}
		if a.Len() != b.Len() {
			*out = append(*out, fmt.Sprintf("%s: len %d, got %d: want %+v, got %+v", path, a.Len(), b.Len(), a.Interface(), b.Interface()))
			return
		}
		for i := 0; i < a.Len(); i++ {
			rcDiffValue(out, fmt.Sprintf("%s[%d]", path, i), a.Index(i), b.Index(i))
		}
	default:
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			*out = append(*out, fmt.Sprintf("%s: want %#v, got %#v", path, a.Interface(), b.Interface()))
		}
	}
}

// ---------------------------------------------------------------------------
// The parity matrix

type rcCase struct {
	name string
	// run loads a graph with tx (scoped is true when tx carries the case's
	// RelationshipCache scopes) and returns it by value.
	run    func(tx *gorm.DB) (any, error)
	scopes []string // RelationshipCache paths
	hitQ   int64    // statements reaching the database on a hit
	// sanity checks the bare answer, so that a case tests what it says.
	sanity func(t *testing.T, v any)
}

func rcFindUsers(preload func(*gorm.DB) *gorm.DB, where ...any) func(tx *gorm.DB) (any, error) {
	return func(tx *gorm.DB) (any, error) {
		var us []RcUser
		q := preload(tx).Order("id")
		if len(where) > 0 {
			q = q.Where(where[0], where[1:]...)
		}
		err := q.Find(&us).Error
		return us, err
	}
}

func rcCount(f func(RcUser) int, want func(int) bool, what string) func(*testing.T, any) {
	return func(t *testing.T, v any) {
		t.Helper()
		n := 0
		for _, u := range v.([]RcUser) {
			n += f(u)
		}
		if !want(n) {
			t.Errorf("sanity: %d %s", n, what)
		}
	}
}

func rcSomePosts(t *testing.T, v any) {
	rcCount(func(u RcUser) int { return len(u.Posts) }, func(n int) bool { return n > 5 }, "posts")(t, v)
}

func rcCases() []rcCase {
	return []rcCase{
		{name: "has-one", scopes: []string{"Profile"}, hitQ: 1,
			run: rcFindUsers(func(tx *gorm.DB) *gorm.DB { return tx.Preload("Profile") }),
			sanity: rcCount(func(u RcUser) int {
				if u.Profile != nil {
					return 1
				}
				return 0
			}, func(n int) bool { return n > 5 && n < rcUsers }, "profiles")},
		{name: "has-many/pointers", scopes: []string{"Posts"}, hitQ: 1,
			run: func(tx *gorm.DB) (any, error) {
				var us []RcUserAlt
				err := tx.Preload("Posts", rcByID).Order("id").Find(&us).Error
				return us, err
			}},
		{name: "has-one/value", scopes: []string{"Profile"}, hitQ: 1,
			run: func(tx *gorm.DB) (any, error) {
				var us []RcUserAlt
				err := tx.Preload("Profile").Order("id").Find(&us).Error
				return us, err
			}},
		{name: "has-many/duplicate-parents", scopes: []string{"Posts"}, hitQ: 1,
			run: func(tx *gorm.DB) (any, error) {
				var us []RcUser
				err := tx.Table(rcDoubledUsers).Preload("Posts", rcByID).Order("id").Find(&us).Error
				return us, err
			},
			sanity: func(t *testing.T, v any) {
				if us := v.([]RcUser); len(us) != 2*rcUsers || len(us[0].Posts) == 0 || us[1].ID != us[0].ID {
					t.Fatalf("want every user twice, with posts: %d users", len(us))
				}
			}},
		{name: "has-many/pointers/duplicate-parents", scopes: []string{"Posts", "Profile"}, hitQ: 1,
			run: func(tx *gorm.DB) (any, error) {
				var us []RcUserAlt
				err := tx.Table(rcDoubledUsers).Preload("Posts", rcByID).Preload("Profile").Order("id").Find(&us).Error
				return us, err
			}},
		{name: "has-many", scopes: []string{"Posts"}, hitQ: 1,
			run: rcFindUsers(func(tx *gorm.DB) *gorm.DB { return tx.Preload("Posts", rcByID) }), sanity: rcSomePosts},
		{name: "has-many/no-order", scopes: []string{"Posts"}, hitQ: 1,
			run: rcFindUsers(func(tx *gorm.DB) *gorm.DB { return tx.Preload("Posts") }), sanity: rcSomePosts},
		{name: "has-many/no-back-reference", scopes: []string{"Todos"}, hitQ: 1,
			run:    rcFindUsers(func(tx *gorm.DB) *gorm.DB { return tx.Preload("Todos", rcByID) }),
			sanity: rcCount(func(u RcUser) int { return len(u.Todos) }, func(n int) bool { return n == rcUsers/2 }, "todos")},
		{name: "belongs-to", scopes: []string{"RcUser"}, hitQ: 1,
			run: func(tx *gorm.DB) (any, error) {
				var ps []RcPost
				err := tx.Preload("RcUser").Order("id").Find(&ps).Error
				return ps, err
			},
			sanity: func(t *testing.T, v any) {
				for _, p := range v.([]RcPost) {
					if p.RcUser == nil || p.RcUser.ID != p.RcUserID {
						t.Errorf("sanity: post %d without its user", p.ID)
					}
				}
			}},
		{name: "many2many", scopes: []string{"Roles"}, hitQ: 1,
			run:    rcFindUsers(func(tx *gorm.DB) *gorm.DB { return tx.Preload("Roles", rcByID) }, "id <= ?", 10),
			sanity: rcCount(func(u RcUser) int { return len(u.Roles) }, func(n int) bool { return n == 20 }, "roles")},
		{name: "many2many/no-order", scopes: []string{"Roles"}, hitQ: 1,
			run: rcFindUsers(func(tx *gorm.DB) *gorm.DB { return tx.Preload("Roles") }, "id <= ?", 10)},
		// Users 11..20 had their roles appended in reverse id order: the
		// join rows come back in an order other than the roles'.
		{name: "many2many/join-order-not-role-order", scopes: []string{"Roles"}, hitQ: 1,
			run: rcFindUsers(func(tx *gorm.DB) *gorm.DB { return tx.Preload("Roles", rcByID) }, "id > ?", 10),
			sanity: func(t *testing.T, v any) {
				for _, u := range v.([]RcUser) {
					if len(u.Roles) < 2 || !sort.SliceIsSorted(u.Roles, func(i, j int) bool { return u.Roles[i].ID < u.Roles[j].ID }) {
						t.Errorf("sanity: user %d roles %+v", u.ID, u.Roles)
					}
				}
			}},
		{name: "polymorphic", scopes: []string{"Notes"}, hitQ: 1,
			run: rcFindUsers(func(tx *gorm.DB) *gorm.DB { return tx.Preload("Notes", rcByID) }),
			sanity: rcCount(func(u RcUser) int {
				for _, n := range u.Notes {
					if n.OwnerType != "rc_users" {
						return 1000
					}
				}
				return len(u.Notes)
			}, func(n int) bool { return n == rcUsers/2 }, "user notes")},
		{name: "polymorphic/groups", scopes: []string{"Notes"}, hitQ: 1,
			run: func(tx *gorm.DB) (any, error) {
				var gs []RcGroup
				err := tx.Preload("Notes", rcByID).Order("id").Find(&gs).Error
				return gs, err
			}},
		{name: "nested/both-levels", scopes: []string{"Posts", "Posts.Comments"}, hitQ: 1,
			run: rcFindUsers(func(tx *gorm.DB) *gorm.DB {
				return tx.Preload("Posts", rcByID).Preload("Posts.Comments", rcByID)
			}), sanity: rcSomePosts},
		{name: "nested/inner-only", scopes: []string{"Posts.Comments"}, hitQ: 2,
			run: rcFindUsers(func(tx *gorm.DB) *gorm.DB {
				return tx.Preload("Posts", rcByID).Preload("Posts.Comments", rcByID)
			}), sanity: rcSomePosts},
		{name: "nested/outer-only", scopes: []string{"Posts"}, hitQ: 2,
			run: rcFindUsers(func(tx *gorm.DB) *gorm.DB {
				return tx.Preload("Posts", rcByID).Preload("Posts.Comments", rcByID)
			}), sanity: rcSomePosts},
		{name: "nested/belongs-to-then-has-many", scopes: []string{"RcPost", "RcPost.RcUser"}, hitQ: 1,
			run: func(tx *gorm.DB) (any, error) {
				var cs []RcComment
				err := tx.Preload("RcPost.RcUser").Order("id").Find(&cs).Error
				return cs, err
			}},
		{name: "condition", scopes: []string{"Posts"}, hitQ: 1,
			run: rcFindUsers(func(tx *gorm.DB) *gorm.DB { return tx.Preload("Posts", "published = ?", true) }),
			sanity: func(t *testing.T, v any) {
				for _, u := range v.([]RcUser) {
					for _, p := range u.Posts {
						if !p.Published {
							t.Errorf("sanity: unpublished post %d", p.ID)
						}
					}
				}
			}},
		{name: "custom-function", scopes: []string{"Posts"}, hitQ: 1,
			run: rcFindUsers(func(tx *gorm.DB) *gorm.DB {
				return tx.Preload("Posts", func(db *gorm.DB) *gorm.DB { return db.Order("id DESC") })
			}), sanity: rcSomePosts},
		{name: "every-kind", scopes: []string{"Profile", "Posts", "Posts.Comments", "Todos", "Roles", "Notes"}, hitQ: 1,
			run: rcFindUsers(func(tx *gorm.DB) *gorm.DB {
				return tx.Preload("Profile").Preload("Posts", rcByID).Preload("Posts.Comments", rcByID).
					Preload("Todos", rcByID).Preload("Roles", rcByID).Preload("Notes", rcByID)
			}, "id <= ?", 10)},
		{name: "associations", scopes: []string{"Posts"}, hitQ: 6, // users; Profile, Todos, Roles (2), Notes uncached
			run: rcFindUsers(func(tx *gorm.DB) *gorm.DB { return tx.Preload(clause.Associations) }, "id <= ?", 10)},
		{name: "First/one-parent", scopes: []string{"Posts"}, hitQ: 1,
			run: func(tx *gorm.DB) (any, error) {
				var u RcUser
				err := tx.Preload("Posts", rcByID).First(&u, 3).Error
				return u, err
			}},
		{name: "First/parent-without-children", scopes: []string{"Posts"}, hitQ: 1,
			run: func(tx *gorm.DB) (any, error) {
				var u RcUser
				err := tx.Preload("Posts", rcByID).First(&u, 4).Error
				return u, err
			}},
		{name: "no-parents", scopes: []string{"Posts"}, hitQ: 1,
			run: rcFindUsers(func(tx *gorm.DB) *gorm.DB { return tx.Preload("Posts") }, "id > ?", 1000)},
		{name: "scope-without-preload", scopes: []string{"Posts", "Nope", "Posts.Nope"}, hitQ: 2,
			run: rcFindUsers(func(tx *gorm.DB) *gorm.DB { return tx.Preload("Profile") })},
		{name: "scope-without-any-preload", scopes: []string{"Posts"}, hitQ: 1,
			run: rcFindUsers(func(tx *gorm.DB) *gorm.DB { return tx })},
	}
}

type rcRun struct {
	v       any
	err     error
	queries int64
}

func (e *rcEnv) runCase(tx *gorm.DB, run func(*gorm.DB) (any, error)) rcRun {
	e.db.Pool.Reset()
	v, err := run(tx)
	return rcRun{v, err, e.db.Pool.Queries()}
}

func TestRcParityMatrix(t *testing.T) {
	cases := rcCases()
	names := make([]string, len(cases))
	for i, c := range cases {
		names[i] = c.name
	}
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		e := rcSetup(t, db, names...)
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				scoped := func() *gorm.DB {
					tx := e.cached
					for _, p := range c.scopes {
						tx = tx.Scopes(dogpile.RelationshipCache(p, c.name))
					}
					return tx
				}
				bare := e.runCase(e.bare(), c.run)
				if bare.err != nil {
					t.Fatalf("bare: %v", bare.err)
				}
				if c.sanity != nil {
					c.sanity(t, bare.v)
				}
				plain := e.runCase(e.cached, c.run)
				miss := e.runCase(scoped(), c.run)
				for _, r := range []struct {
					what string
					r    rcRun
				}{{"plain", plain}, {"miss", miss}} {
					if r.r.err != nil {
						t.Errorf("%s: %v", r.what, r.r.err)
						continue
					}
					rcSame(t, r.what, bare.v, r.r.v)
				}
				if plain.queries != bare.queries || miss.queries != bare.queries {
					t.Errorf("statements: bare %d, plain %d, miss %d; want them equal", bare.queries, plain.queries, miss.queries)
				}
				// Hits after the first are copies of the decoded children
				// (memo.go): what a caller does to its answer, scribbled
				// over here, must reach no other caller.
				for _, what := range []string{"hit", "second hit", "third hit"} {
					hit := e.runCase(scoped(), c.run)
					if hit.err != nil {
						t.Errorf("%s: %v", what, hit.err)
					} else {
						rcSame(t, what, bare.v, hit.v)
					}
					if hit.queries != c.hitQ {
						t.Errorf("%s: %d statements; want %d", what, hit.queries, c.hitQ)
					}
					scribble(reflect.ValueOf(hit.v))
				}
				s := e.regions[c.name].Stats()
				if s.DecodeFailures != 0 || s.NotStored != 0 || s.Errors != 0 {
					t.Errorf("region stats %+v", s)
				}
				if t.Failed() {
					t.Logf("region stats %+v", s)
				}
			})
		}
	})
}

// ---------------------------------------------------------------------------
// Sharing entries between queries

// TestRcOverlap: Posts for users 1..10, then for users 5..15: the second
// preload query asks only for users 11..15.
func TestRcOverlap(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		e := rcSetup(t, db)
		got, err := rcUsersPosts(e.cached.Scopes(rcRC("Posts")), 1, 10)
		dbtest.Must(t, err)
		want, err := rcUsersPosts(e.bare(), 1, 10)
		dbtest.Must(t, err)
		rcSame(t, "users 1..10", want, got)
		if ins := e.rec.ins(t, "rc_posts", "rc_user_id"); !reflect.DeepEqual(ins, [][]int64{rcRange(1, 10)}) {
			t.Errorf("first load: preload IN lists %v; want [1..10]", ins)
		}

		e.rec.reset()
		db.Pool.Reset()
		got, err = rcUsersPosts(e.cached.Scopes(rcRC("Posts")), 5, 15)
		dbtest.Must(t, err)
		if q := db.Pool.Queries(); q != 2 {
			t.Errorf("second load: %d queries; want 2 (users, posts of 11..15)%s", q, e.rec.all())
		}
		if ins := e.rec.ins(t, "rc_posts", "rc_user_id"); !reflect.DeepEqual(ins, [][]int64{rcRange(11, 15)}) {
			t.Errorf("second load: preload IN lists %v; want [11..15]%s", ins, e.rec.all())
		}
		want, err = rcUsersPosts(e.bare(), 5, 15)
		dbtest.Must(t, err)
		rcSame(t, "users 5..15", want, got)

		// Everything is cached now: 1..15 needs no preload query.
		e.rec.reset()
		got, err = rcUsersPosts(e.cached.Scopes(rcRC("Posts")), 1, 15)
		dbtest.Must(t, err)
		if n := len(e.rec.on("rc_posts")); n != 0 {
			t.Errorf("users 1..15: %d preload queries; want 0%s", n, e.rec.all())
		}
		want, err = rcUsersPosts(e.bare(), 1, 15)
		dbtest.Must(t, err)
		rcSame(t, "users 1..15", want, got)
	})
}

// TestRcEmptyParentCached: a parent without children is cached as empty.
func TestRcEmptyParentCached(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		e := rcSetup(t, db)
		for i := 0; i < 2; i++ {
			e.rec.reset()
			var us []RcUser
			dbtest.Must(t, e.cached.Scopes(rcRC("Posts")).Preload("Posts").Where("id IN ?", []int{4, 8, 12}).Order("id").Find(&us).Error)
			if len(us) != 3 || len(us[0].Posts)+len(us[1].Posts)+len(us[2].Posts) != 0 {
				t.Fatalf("load %d: users %+v; want 3 users without posts", i, us)
			}
			want := 1 - i
			if n := len(e.rec.on("rc_posts")); n != want {
				t.Errorf("load %d: %d preload queries; want %d%s", i, n, want, e.rec.all())
			}
			var bare []RcUser
			dbtest.Must(t, e.bare().Preload("Posts").Where("id IN ?", []int{4, 8, 12}).Order("id").Find(&bare).Error)
			rcSame(t, fmt.Sprintf("load %d", i), bare, us)
		}
	})
}

// TestRcConditionsPartOfKey: conditions and preload functions never share
// entries.
func TestRcConditionsPartOfKey(t *testing.T) {
	type variant struct {
		name string
		args []any
	}
	variants := []variant{
		{"published", []any{"published = ?", true}},
		{"unpublished", []any{"published = ?", false}},
		{"none", nil},
		{"order-desc", []any{func(db *gorm.DB) *gorm.DB { return db.Order("id DESC") }}},
		{"order-asc", []any{func(db *gorm.DB) *gorm.DB { return db.Order("id") }}},
		{"title-like", []any{func(db *gorm.DB) *gorm.DB { return db.Where("title LIKE ?", "%p1") }}},
		{"select", []any{func(db *gorm.DB) *gorm.DB { return db.Select("id", "rc_user_id", "title").Order("id") }}},
	}
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		e := rcSetup(t, db)
		load := func(tx *gorm.DB, v variant) []RcUser {
			var us []RcUser
			dbtest.Must(t, tx.Preload("Posts", v.args...).Where("id <= ?", 12).Order("id").Find(&us).Error)
			return us
		}
		for round := 0; round < 2; round++ {
			for _, v := range variants {
				e.rec.reset()
				got := load(e.cached.Scopes(rcRC("Posts")), v)
				want := load(e.bare(), v)
				rcSame(t, fmt.Sprintf("round %d, %s", round, v.name), want, got)
				wantQ := 1 - round // first round: each variant misses; second: all hit
				if n := len(e.rec.on("rc_posts")); n != wantQ {
					t.Errorf("round %d, %s: %d preload queries; want %d", round, v.name, n, wantQ)
				}
			}
		}
	})
}

// TestRcWithFromCache: FromCache on the parent query and RelationshipCache
// on the preload: a full hit makes no query at all.
func TestRcWithFromCache(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		e := rcSetup(t, db)
		scoped := func() *gorm.DB {
			return e.cached.Scopes(dogpile.FromCache("default"), rcRC("Posts"), rcRC("Posts.Comments"), rcRC("Roles"))
		}
		load := func(tx *gorm.DB) []RcUser {
			var us []RcUser
			dbtest.Must(t, tx.Preload("Posts", rcByID).Preload("Posts.Comments", rcByID).Preload("Roles", rcByID).
				Where("id <= ?", 10).Order("id").Find(&us).Error)
			return us
		}
		want := load(e.bare())
		for i, wantQ := range []int64{5, 0, 0} { // users, posts, comments, join, roles
			db.Pool.Reset()
			got := load(scoped())
			if q := db.Pool.Queries(); q != wantQ {
				t.Errorf("load %d: %d queries; want %d", i, q, wantQ)
			}
			rcSame(t, fmt.Sprintf("load %d", i), want, got)
		}
		// A write to a post: the users entry stays, the posts of its user
		// are reloaded, nothing else.
		var p RcPost
		dbtest.Must(t, e.bare().Where("rc_user_id = ?", 3).Order("id").First(&p).Error)
		p.Title = "changed"
		dbtest.Must(t, e.cached.Save(&p).Error)
		e.rec.reset()
		db.Pool.Reset()
		got := load(scoped())
		if ins := e.rec.ins(t, "rc_posts", "rc_user_id"); !reflect.DeepEqual(ins, [][]int64{{3}}) {
			t.Errorf("after a write to a post of user 3: preload IN lists %v; want [[3]]%s", ins, e.rec.all())
		}
		rcSame(t, "after write", load(e.bare()), got)
	})
}

// TestRcPreloadLimit: a LIMIT in a preload function applies to the whole
// preload query, across parents (GORM's semantics): answers cannot be split
// per parent and shared with another parent set.
func TestRcPreloadLimit(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		e := rcSetup(t, db)
		limited := func(db *gorm.DB) *gorm.DB { return db.Order("id").Limit(2) }
		load := func(tx *gorm.DB, from, to int) []RcUser {
			var us []RcUser
			dbtest.Must(t, tx.Preload("Posts", limited).Where("id BETWEEN ? AND ?", from, to).Order("id").Find(&us).Error)
			return us
		}
		for _, r := range [][2]int{{1, 10}, {3, 10}, {5, 6}} {
			got := load(e.cached.Scopes(rcRC("Posts")), r[0], r[1])
			rcSame(t, fmt.Sprintf("users %d..%d, Limit(2)", r[0], r[1]), load(e.bare(), r[0], r[1]), got)
		}
	})
}

// ---------------------------------------------------------------------------
// Invalidation

// TestRcInvalidatePerParent: writes to a child row reload only the parents
// the row belonged to before and after the write; writes whose rows cannot
// be known reload every parent. Answers are always fresh.
func TestRcInvalidatePerParent(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		e := rcSetup(t, db)
		post := func(user int) RcPost {
			var p RcPost
			dbtest.Must(t, e.bare().Where("rc_user_id = ?", user).Order("id").First(&p).Error)
			return p
		}
		all := rcRange(1, 10)
		steps := []struct {
			name  string
			write func(tx *gorm.DB)
			want  []int64 // parents reloaded (nil: none)
		}{
			{"save", func(tx *gorm.DB) {
				p := post(3)
				p.Title = "saved"
				dbtest.Must(t, tx.Save(&p).Error)
			}, []int64{3}},
			{"update-model-column", func(tx *gorm.DB) {
				p := post(3)
				dbtest.Must(t, tx.Model(&p).Update("title", "updated").Error)
			}, []int64{3}},
			{"move-3-to-4", func(tx *gorm.DB) {
				p := post(3)
				p.RcUserID = 4
				dbtest.Must(t, tx.Save(&p).Error)
			}, []int64{3, 4}},
			{"move-back-by-update-column", func(tx *gorm.DB) {
				p := post(4)
				dbtest.Must(t, tx.Model(&RcPost{ID: p.ID}).Update("rc_user_id", 3).Error)
			}, []int64{3, 4}},
			{"create", func(tx *gorm.DB) {
				dbtest.Must(t, tx.Create(&RcPost{RcUserID: 3, Title: "created", CreatedAt: time.Date(2024, 7, 1, 0, 0, 0, 0, time.UTC)}).Error)
			}, []int64{3}},
			{"delete", func(tx *gorm.DB) {
				var p RcPost
				dbtest.Must(t, e.bare().Where("title = ?", "created").First(&p).Error)
				dbtest.Must(t, tx.Delete(&p).Error)
			}, []int64{3}},
			{"create-again", func(tx *gorm.DB) {
				dbtest.Must(t, tx.Create(&RcPost{RcUserID: 3, Title: "created"}).Error)
			}, []int64{3}},
			{"create-batch", func(tx *gorm.DB) {
				dbtest.Must(t, tx.Create(&[]RcPost{{RcUserID: 2, Title: "b1"}, {RcUserID: 7, Title: "b2"}}).Error)
			}, []int64{2, 7}},
			{"write-other-parent-outside-set", func(tx *gorm.DB) {
				dbtest.Must(t, tx.Create(&RcPost{RcUserID: 15, Title: "elsewhere"}).Error)
			}, nil},
			{"update-over-where", func(tx *gorm.DB) {
				dbtest.Must(t, tx.Model(&RcPost{}).Where("title = ?", "created").Update("title", "renamed").Error)
			}, all},
			{"updates-map-over-where", func(tx *gorm.DB) {
				dbtest.Must(t, tx.Model(&RcPost{}).Where("rc_user_id = ?", 5).Updates(map[string]any{"published": false}).Error)
			}, all},
			{"delete-by-condition", func(tx *gorm.DB) {
				dbtest.Must(t, tx.Where("title = ?", "b2").Delete(&RcPost{}).Error)
			}, all},
			{"raw-exec", func(tx *gorm.DB) {
				p := post(6)
				dbtest.Must(t, tx.Exec("UPDATE rc_posts SET rc_user_id = ? WHERE id = ?", 9, p.ID).Error)
			}, all},
			{"write-to-another-table", func(tx *gorm.DB) {
				dbtest.Must(t, tx.Create(&RcTodo{RcUserID: 3, What: "x"}).Error)
			}, nil},
		}
		load := func(tx *gorm.DB) []RcUser {
			us, err := rcUsersPosts(tx, 1, 10)
			dbtest.Must(t, err)
			return us
		}
		load(e.cached.Scopes(rcRC("Posts")))
		for _, s := range steps {
			s.write(e.cached)
			e.rec.reset()
			got := load(e.cached.Scopes(rcRC("Posts")))
			var ins [][]int64
			if s.want != nil {
				ins = [][]int64{s.want}
			}
			if g := e.rec.ins(t, "rc_posts", "rc_user_id"); !reflect.DeepEqual(g, ins) {
				t.Errorf("%s: preload IN lists %v; want %v", s.name, g, ins)
			}
			rcSame(t, s.name, load(e.bare()), got)
		}
	})
}

// TestRcInvalidateSaveSlice: Save of a slice is an upsert run through the
// create chain; moving a post from user 3 to user 4 that way must reload
// both users (the entry of user 3 still lists the post otherwise).
func TestRcInvalidateSaveSlice(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		e := rcSetup(t, db)
		load := func(tx *gorm.DB) []RcUser {
			us, err := rcUsersPosts(tx, 1, 10)
			dbtest.Must(t, err)
			return us
		}
		load(e.cached.Scopes(rcRC("Posts")))
		var ps []RcPost
		dbtest.Must(t, e.bare().Where("rc_user_id = ?", 3).Order("id").Limit(1).Find(&ps).Error)
		ps[0].RcUserID = 4
		dbtest.Must(t, e.cached.Save(&ps).Error)
		e.rec.reset()
		got := load(e.cached.Scopes(rcRC("Posts")))
		if g := e.rec.ins(t, "rc_posts", "rc_user_id"); len(g) != 1 || !reflect.DeepEqual(g[0], []int64{3, 4}) && !reflect.DeepEqual(g[0], rcRange(1, 10)) {
			t.Errorf("Save(slice) moving a post 3→4: preload IN lists %v; want [[3 4]] (or every parent)", g)
		}
		rcSame(t, "Save(slice) moving a post 3→4", load(e.bare()), got)
	})
}

// TestRcInvalidateOtherKinds: writes to the children of the other kinds
// (no back-reference, join table, polymorphic, belongs-to target, nested)
// keep answers fresh; where the key column is a relationship key only the
// affected parents are reloaded.
func TestRcInvalidateOtherKinds(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		e := rcSetup(t, db)
		scoped := func() *gorm.DB {
			return e.cached.Scopes(rcRC("Todos"), rcRC("Roles"), rcRC("Notes"), rcRC("Posts"), rcRC("Posts.Comments"), rcRC("Profile"))
		}
		load := func(tx *gorm.DB) []RcUser {
			var us []RcUser
			dbtest.Must(t, tx.Preload("Todos", rcByID).Preload("Roles", rcByID).Preload("Notes", rcByID).Preload("Profile").
				Preload("Posts", rcByID).Preload("Posts.Comments", rcByID).Where("id <= ?", 10).Order("id").Find(&us).Error)
			return us
		}
		loadPosts := func(tx *gorm.DB) []RcPost {
			var ps []RcPost
			dbtest.Must(t, tx.Preload("RcUser").Order("id").Find(&ps).Error)
			return ps
		}
		load(scoped())
		loadPosts(e.cached.Scopes(rcRC("RcUser")))
		type check struct {
			table, col string
			want       [][]int64 // nil: no query
			alt        [][]int64 // another acceptable answer, when set
		}
		var post3 RcPost
		dbtest.Must(t, e.bare().Where("rc_user_id = ?", 3).Order("id").First(&post3).Error)
		steps := []struct {
			name   string
			write  func(tx *gorm.DB)
			checks []check
		}{
			{"todo-save (no back-reference: every parent)", func(tx *gorm.DB) {
				var td RcTodo
				dbtest.Must(t, e.bare().Where("rc_user_id = ?", 3).First(&td).Error)
				td.What = "changed"
				dbtest.Must(t, tx.Save(&td).Error)
			}, []check{
				// GORM registers has-many relations on the child schema
				// too ("_RcUser_Todos"), so the plugin may know the rows.
				{"rc_todos", "rc_user_id", [][]int64{rcRange(1, 10)}, [][]int64{{3}}},
				{"rc_posts", "rc_user_id", nil, nil}}},
			{"profile-create (no back-reference)", func(tx *gorm.DB) {
				dbtest.Must(t, tx.Create(&RcProfile{RcUserID: 3, Bio: "new"}).Error)
			}, []check{{"rc_todos", "rc_user_id", nil, nil}}},
			{"role-append (join table rows)", func(tx *gorm.DB) {
				u := RcUser{ID: 3}
				dbtest.Must(t, tx.Model(&u).Association("Roles").Append(&RcRole{ID: 4}))
			}, []check{{"rc_user_roles", "rc_user_id", [][]int64{{3}}, nil}}},
			{"role-delete (join table, by condition)", func(tx *gorm.DB) {
				u := RcUser{ID: 5}
				dbtest.Must(t, tx.Model(&u).Association("Roles").Delete(&RcRole{ID: 1}))
			}, nil},
			{"role-rename (target rows)", func(tx *gorm.DB) {
				dbtest.Must(t, tx.Save(&RcRole{ID: 3, Name: "r3-renamed"}).Error)
			}, nil},
			{"note-create (polymorphic)", func(tx *gorm.DB) {
				dbtest.Must(t, tx.Create(&RcNote{OwnerID: 3, OwnerType: "rc_users", Body: "new note"}).Error)
			}, nil},
			{"group-note-for-id-3 (other owner type)", func(tx *gorm.DB) {
				dbtest.Must(t, tx.Create(&RcNote{OwnerID: 3, OwnerType: "rc_groups", Body: "group note"}).Error)
			}, nil},
			{"comment-create (nested: only its post)", func(tx *gorm.DB) {
				dbtest.Must(t, tx.Create(&RcComment{RcPostID: post3.ID, Body: "new comment"}).Error)
			}, []check{{"rc_comments", "rc_post_id", [][]int64{{int64(post3.ID)}}, nil}, {"rc_posts", "rc_user_id", nil, nil}}},
			{"comment-update-over-where (nested: every post)", func(tx *gorm.DB) {
				dbtest.Must(t, tx.Model(&RcComment{}).Where("body = ?", "new comment").Update("body", "edited").Error)
			}, []check{{"rc_posts", "rc_user_id", nil, nil}}},
			{"user-rename (belongs-to target)", func(tx *gorm.DB) {
				dbtest.Must(t, tx.Model(&RcUser{ID: 3}).Update("name", "renamed").Error)
			}, nil},
		}
		for _, s := range steps {
			s.write(e.cached)
			e.rec.reset()
			got := load(scoped())
			for _, c := range s.checks {
				if g := e.rec.ins(t, c.table, c.col); !reflect.DeepEqual(g, c.want) && (c.alt == nil || !reflect.DeepEqual(g, c.alt)) {
					t.Errorf("%s: %s IN lists %v; want %v%s", s.name, c.table, g, c.want, e.rec.all())
				}
			}
			rcSame(t, s.name, load(e.bare()), got)
			rcSame(t, s.name+": posts with users", loadPosts(e.bare()), loadPosts(e.cached.Scopes(rcRC("RcUser"))))
		}
	})
}

// ---------------------------------------------------------------------------
// Stampede and transactions

// TestRcStampede: 100 goroutines preloading the same cold parents make one
// preload query.
func TestRcStampede(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		e := rcSetup(t, db)
		sqlDB, err := e.cached.DB()
		dbtest.Must(t, err)
		sqlDB.SetMaxOpenConns(10)
		want, err := rcUsersPosts(e.bare(), 1, 15)
		dbtest.Must(t, err)
		e.rec.reset()
		const n = 100
		start := make(chan struct{})
		var wg sync.WaitGroup
		got := make([][]RcUser, n)
		errs := make([]error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				<-start
				got[i], errs[i] = rcUsersPosts(e.cached.Scopes(rcRC("Posts")), 1, 15)
			}(i)
		}
		close(start)
		wg.Wait()
		for i := range got {
			if errs[i] != nil {
				t.Fatalf("goroutine %d: %v", i, errs[i])
			}
			rcSame(t, fmt.Sprintf("goroutine %d", i), want, got[i])
		}
		if ins := e.rec.ins(t, "rc_posts", "rc_user_id"); !reflect.DeepEqual(ins, [][]int64{rcRange(1, 15)}) {
			t.Errorf("%d goroutines: preload IN lists %v; want exactly one, [1..15]", n, ins)
		}
		t.Logf("region stats %+v", e.regions["default"].Stats())
	})
}

// TestRcTransactions: committed child writes invalidate, rolled back ones
// don't; reads in a transaction that has written see its writes.
func TestRcTransactions(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		e := rcSetup(t, db)
		load := func(tx *gorm.DB) []RcUser {
			us, err := rcUsersPosts(tx, 1, 10)
			dbtest.Must(t, err)
			return us
		}
		checkIN := func(what string, want [][]int64) {
			t.Helper()
			if g := e.rec.ins(t, "rc_posts", "rc_user_id"); !reflect.DeepEqual(g, want) {
				t.Errorf("%s: preload IN lists %v; want %v%s", what, g, want, e.rec.all())
			}
		}
		load(e.cached.Scopes(rcRC("Posts")))

		// Committed: the new post is seen inside and after.
		err := e.cached.Transaction(func(tx *gorm.DB) error {
			if err := tx.Create(&RcPost{RcUserID: 3, Title: "in-tx"}).Error; err != nil {
				return err
			}
			e.rec.reset()
			inside := load(tx.Scopes(rcRC("Posts")))
			checkIN("read in the writing transaction", [][]int64{rcRange(1, 10)})
			if !rcHasTitle(inside[2].Posts, "in-tx") {
				t.Errorf("read in the writing transaction misses its own post: %+v", inside[2].Posts)
			}
			return nil
		})
		dbtest.Must(t, err)
		e.rec.reset()
		got := load(e.cached.Scopes(rcRC("Posts")))
		checkIN("after commit", [][]int64{{3}})
		rcSame(t, "after commit", load(e.bare()), got)

		// Rolled back with Transaction's error.
		_ = e.cached.Transaction(func(tx *gorm.DB) error {
			dbtest.Must(t, tx.Create(&RcPost{RcUserID: 5, Title: "rolled-back"}).Error)
			inside := load(tx.Scopes(rcRC("Posts")))
			if !rcHasTitle(inside[4].Posts, "rolled-back") {
				t.Errorf("read in the writing transaction misses its own post: %+v", inside[4].Posts)
			}
			return fmt.Errorf("roll back")
		})
		e.rec.reset()
		got = load(e.cached.Scopes(rcRC("Posts")))
		checkIN("after rollback", nil)
		rcSame(t, "after rollback", load(e.bare()), got)

		// Rolled back with Begin/Rollback, a move between parents.
		var p RcPost
		dbtest.Must(t, e.bare().Where("rc_user_id = ?", 6).First(&p).Error)
		tx := e.cached.Begin()
		p.RcUserID = 7
		dbtest.Must(t, tx.Save(&p).Error)
		dbtest.Must(t, tx.Rollback().Error)
		e.rec.reset()
		got = load(e.cached.Scopes(rcRC("Posts")))
		checkIN("after Begin/Rollback", nil)
		rcSame(t, "after Begin/Rollback", load(e.bare()), got)

		// Committed with Begin/Commit, a move between parents.
		tx = e.cached.Begin()
		dbtest.Must(t, tx.Save(&p).Error)
		dbtest.Must(t, tx.Commit().Error)
		e.rec.reset()
		got = load(e.cached.Scopes(rcRC("Posts")))
		checkIN("after Begin/Commit", [][]int64{{6, 7}})
		rcSame(t, "after Begin/Commit", load(e.bare()), got)

		// A read-only transaction is answered correctly too.
		dbtest.Must(t, e.cached.Transaction(func(tx *gorm.DB) error {
			rcSame(t, "read-only transaction", load(e.bare()), load(tx.Scopes(rcRC("Posts"))))
			return nil
		}))
	})
}

func rcHasTitle(ps []RcPost, title string) bool {
	for _, p := range ps {
		if p.Title == title {
			return true
		}
	}
	return false
}

// TestRcWriterWithoutParentSchema: another *gorm.DB (standing for another
// process sharing the cache backend) that never loaded RcUser writes to a
// child table. Where the child declares the back-reference (RcPost.RcUser)
// its writes bump the parents' rows; where it does not (RcTodo), the reader
// may only rely on row tags if every writer bumps them whatever schemas it
// has parsed: its answers must stay fresh.
func TestRcWriterWithoutParentSchema(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		e := rcSetup(t, db)
		var writer *gorm.DB
		var err error
		cfg := &gorm.Config{Logger: logger.Discard}
		switch db.Dialect {
		case "sqlite":
			writer, err = gorm.Open(sqlite.New(sqlite.Config{Conn: e.rec}), cfg)
		default:
			writer, err = gorm.Open(postgres.New(postgres.Config{Conn: e.rec}), cfg)
		}
		dbtest.Must(t, err)
		dbtest.Must(t, writer.Use(dogpile.New(e.regions)))

		load := func(tx *gorm.DB) []RcUser {
			var us []RcUser
			dbtest.Must(t, tx.Preload("Todos", rcByID).Preload("Posts", rcByID).Where("id <= ?", 10).Order("id").Find(&us).Error)
			return us
		}
		scoped := func() *gorm.DB { return e.cached.Scopes(rcRC("Todos"), rcRC("Posts")) }
		rcSame(t, "cold", load(e.bare()), load(scoped()))

		var td RcTodo
		dbtest.Must(t, e.bare().Where("rc_user_id = ?", 3).First(&td).Error)
		td.What = "written by a process that never loaded RcUser"
		dbtest.Must(t, writer.Save(&td).Error)
		var p RcPost
		dbtest.Must(t, e.bare().Where("rc_user_id = ?", 5).First(&p).Error)
		p.Title = "written by a process that never loaded RcUser"
		dbtest.Must(t, writer.Save(&p).Error)

		rcSame(t, "after the other writer's Save of a todo and a post", load(e.bare()), load(scoped()))
	})
}

// TestRcDuplicateParentsOwnChildren: parents that share a key (the same row
// twice) each get children of their own, as GORM gives them, also when
// their children come from the cache.
func TestRcDuplicateParentsOwnChildren(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		e := rcSetup(t, db, "default")
		for round := range 2 { // a miss, then a hit
			var us []RcUser
			if err := e.cached.Scopes(rcRC("Posts")).Table(rcDoubledUsers).Preload("Posts", rcByID).Order("id").Find(&us).Error; err != nil {
				t.Fatal(err)
			}
			if len(us) < 2 || us[0].ID != us[1].ID || len(us[0].Posts) == 0 {
				t.Fatalf("round %d: want the first user twice, with posts", round)
			}
			want := us[1].Posts[0].Title
			us[0].Posts[0].Title = "changed"
			if got := us[1].Posts[0].Title; got != want {
				t.Fatalf("round %d: changing the first copy's post changed the second's: %q", round, got)
			}
		}
	})
}

// RcUserBare reads rc_users without relations.
type RcUserBare struct {
	ID   uint
	Name string
}

func (RcUserBare) TableName() string { return "rc_users" }

// RcHookPost moves, in its AfterFind, the posts of even users to user 1:
// GORM assigns children by their keys after the hooks.
type RcHookPost struct {
	ID       uint
	RcUserID uint
	Title    string
}

func (RcHookPost) TableName() string { return "rc_posts" }

func (p *RcHookPost) AfterFind(*gorm.DB) error {
	if p.RcUserID%2 == 0 {
		p.RcUserID = 1
	}
	return nil
}

type RcUserHooked struct {
	ID    uint
	Name  string
	Posts []RcHookPost `gorm:"foreignKey:RcUserID"`
}

func (RcUserHooked) TableName() string { return "rc_users" }

// TestRcPreloadShapes: preloads whose relations GORM takes from the
// destination rather than the model, and children whose hooks change their
// keys, answer as GORM does, as a miss and as hits.
func TestRcPreloadShapes(t *testing.T) {
	cases := []struct {
		name string
		run  func(tx *gorm.DB) (any, error)
	}{
		{"dest-without-the-relation", func(tx *gorm.DB) (any, error) {
			var us []RcUserBare
			err := tx.Model(&RcUser{}).Preload("Posts").Order("id").Find(&us).Error
			return us, err
		}},
		{"dest-with-another-field-shape", func(tx *gorm.DB) (any, error) {
			var us []RcUserAlt
			err := tx.Model(&RcUser{}).Preload("Posts", rcByID).Order("id").Find(&us).Error
			return us, err
		}},
		{"hook-changes-child-key", func(tx *gorm.DB) (any, error) {
			var us []RcUserHooked
			err := tx.Preload("Posts", rcByID).Order("id").Find(&us).Error
			return us, err
		}},
	}
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		e := rcSetup(t, db, "default")
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				want, wantErr := c.run(e.bare())
				for _, what := range []string{"miss", "hit", "second hit"} {
					got, err := c.run(e.cached.Scopes(rcRC("Posts")))
					if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
						t.Fatalf("%s: error %v; GORM's is %v", what, err, wantErr)
					}
					if err == nil {
						rcSame(t, what, want, got)
					}
				}
			})
		}
	})
}
