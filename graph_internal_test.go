package dogpile

import (
	"slices"
	"testing"
)

// testGraph builds a graph from catalog rows, as loadGraph does.
func testGraph(dialect string, rows ...[4]string) *schemaGraph {
	g := &schemaGraph{
		known: true, kinds: map[string]relKind{}, onUpdate: map[string][]string{},
		onDelete: map[string][]fkEdge{}, referencedBy: map[string][]string{},
		family: map[string][]string{}, viewBases: map[string][]string{}, triggers: map[string]bool{}, opaqueViews: map[string]bool{},
	}
	for _, r := range rows {
		g.add(dialect, r[0], normTable(r[1]), r[2], r[3])
	}
	return g
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }

func TestGraphEffect(t *testing.T) {
	// members ← profiles (ON UPDATE CASCADE, ON DELETE SET NULL) ← notes
	// (ON UPDATE and ON DELETE CASCADE) ← attachments (ON UPDATE SET
	// DEFAULT, ON DELETE NO ACTION); audits
	// references members with NO ACTION; orders has a trigger.
	pg := testGraph("postgres",
		[4]string{"fk", "profiles", "members", "cn"},
		[4]string{"fk", "notes", "profiles", "cc"},
		[4]string{"fk", "attachments", "notes", "da"},
		[4]string{"fk", "audits", "members", "aa"},
		[4]string{"trigger", "orders", "", ""},
		[4]string{"rel", "open_orders", "v", ""},
		[4]string{"view", "open_orders", "orders", ""},
		[4]string{"inherits", "m_2026", "measurements", ""},
	)
	sq := testGraph("sqlite",
		[4]string{"fk", "profiles", "members", "CASCADE|SET NULL"},
		[4]string{"fk", "notes", "profiles", "CASCADE|CASCADE"},
		[4]string{"fk", "attachments", "notes", "SET DEFAULT|NO ACTION"},
		[4]string{"fk", "audits", "members", "NO ACTION|RESTRICT"},
		[4]string{"trigger", "orders_audit", "orders", "CREATE TRIGGER …"},
		[4]string{"trigger", "dogpile_notify", "members", "CREATE TRIGGER …"},
		[4]string{"view", "open_orders", "open_orders", "CREATE VIEW open_orders AS SELECT * FROM orders WHERE open"},
	)
	for _, g := range []*schemaGraph{pg, sq} {
		for _, tc := range []struct {
			table   string
			op      graphOp
			changed []string
			all     bool
		}{
			// An update of members rewrites profiles (cascade), an update
			// that rewrites notes, whose update sets attachments' default.
			{table: "members", op: opUpdate, changed: []string{"profiles", "notes", "attachments"}},
			// A delete sets profiles' key to null: an update of profiles,
			// followed as one.
			{table: "members", op: opDelete, changed: []string{"profiles", "notes", "attachments"}},
			// Deleting profiles deletes notes, whose delete does nothing to
			// attachments (NO ACTION on delete).
			{table: "profiles", op: opDelete, changed: []string{"notes"}},
			// Updating notes sets attachments to their default.
			{table: "notes", op: opUpdate, changed: []string{"attachments"}},
			// Two levels: raw SQL on profiles may update or delete.
			{table: "profiles", op: opAny, changed: []string{"notes", "attachments"}},
			{table: "members", op: opInsert},
			// TRUNCATE … CASCADE empties every referencing table.
			{table: "members", op: opTruncate, changed: []string{"profiles", "audits", "notes", "attachments"}},
			{table: "orders", op: opInsert, all: true},
			// A write through a view writes its base table, whose trigger
			// makes it unknown.
			{table: "open_orders", op: opUpdate, changed: []string{"orders"}, all: true},
		} {
			changed, all := g.effect([]string{tc.table}, tc.op, nil)
			if !slices.Equal(sorted(changed), sorted(tc.changed)) || all != tc.all {
				t.Errorf("effect(%s, %d) = %v, %v; want %v, %v", tc.table, tc.op, changed, all, tc.changed, tc.all)
			}
		}
		// Declared trigger writes replace "unknown", and are followed.
		changed, all := g.effect([]string{"orders"}, opInsert, map[string][]string{"orders": {"members"}})
		if all || !slices.Equal(sorted(changed), sorted([]string{"members", "profiles", "notes", "attachments"})) {
			t.Errorf("declared: %v, %v", changed, all)
		}
	}
	if c, _ := pg.effect([]string{"m_2026"}, opInsert, nil); !slices.Equal(c, []string{"measurements"}) {
		t.Errorf("partition: %v", c)
	}
	if _, all := sq.effect([]string{"members"}, opInsert, nil); all {
		t.Error("the plugin's own dogpile_ trigger counted as the application's")
	}
	if _, all := unknownGraph.effect([]string{"x"}, opInsert, nil); !all {
		t.Error("an unknown catalog must invalidate everything")
	}
}

func TestGraphReadTables(t *testing.T) {
	g := testGraph("postgres",
		[4]string{"rel", "totals", "v", ""}, [4]string{"view", "totals", "sales", ""},
		[4]string{"rel", "top", "v", ""}, [4]string{"view", "top", "totals", ""}, [4]string{"view", "top", "regions", ""},
		[4]string{"rel", "mv", "m", ""}, [4]string{"view", "mv", "sales", ""},
		[4]string{"rel", "over_mv", "v", ""}, [4]string{"view", "over_mv", "mv", ""},
	)
	for _, tc := range []struct{ in, want []string }{
		{[]string{"top"}, []string{"top", "totals", "regions", "sales"}},
		{[]string{"mv"}, []string{"mv"}}, // changes only on REFRESH
		{[]string{"over_mv"}, []string{"over_mv", "mv"}},
		{[]string{"sales", "totals"}, []string{"sales", "totals"}},
	} {
		if got := g.readTables(tc.in); !slices.Equal(sorted(got), sorted(tc.want)) {
			t.Errorf("readTables(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	in := []string{"a"}
	if got := unknownGraph.readTables(in); !slices.Equal(got, []string{"a", anyTable}) || len(in) != 1 {
		t.Errorf("unknown catalog: %v", got)
	}
}

// TestGraphStaleWithoutStatement: a write reported from outside (the
// feed, data_version) has no statement; with the graph stale (after
// invalidateEverything) it reads the graph again rather than crashing.
func TestGraphStaleWithoutStatement(t *testing.T) {
	p := New(nil)
	p.dialect = "sqlite" // and no pool: the catalog cannot be read
	p.graph.cur.Store(unknownGraph)
	p.graphStale()
	tags, all := p.writeTags(nil, []string{"t"}, writeAny, false)
	if !all || tags != nil {
		t.Errorf("writeTags with no statement and no pool = %v, %v; want everything (the catalog could not be read)", tags, all)
	}
}
