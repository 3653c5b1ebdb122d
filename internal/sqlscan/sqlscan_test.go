package sqlscan

import (
	"reflect"
	"testing"
)

func TestScanDDL(t *testing.T) {
	for sql, want := range map[string]bool{
		"CREATE VIEW v AS SELECT 1":                 true,
		"  alter table a add constraint fk ...":     true,
		"DROP TRIGGER IF EXISTS t ON a":             true,
		"CALL proc()":                               true, // may run DDL
		"DO $$ BEGIN EXECUTE 'DROP VIEW v'; END $$": true,
		"BEGIN; ALTER TABLE a ADD CONSTRAINT f FOREIGN KEY (x) REFERENCES b ON DELETE CASCADE; COMMIT": true,
		"SET search_path = x; CREATE VIEW v AS SELECT 1":                                               true,
		"SELECT 1; DROP VIEW v":             true,
		"BEGIN; UPDATE a SET x = 1; COMMIT": false,
		"SELECT 1":                          false,
	} {
		st := Scan(sql)
		if st.DDL != want {
			t.Errorf("Scan(%q).DDL = %v, want %v", sql, st.DDL, want)
		}
		if want && st.Kind != Unknown {
			t.Errorf("Scan(%q).Kind = %d, want Unknown: its effect cannot be read", sql, st.Kind)
		}
	}
}

func TestScanTruncate(t *testing.T) {
	for sql, want := range map[string]bool{
		"TRUNCATE a CASCADE":           true,
		"truncate table a, b":          true,
		"DELETE FROM a":                false,
		"UPDATE a SET n = 'TRUNCATE'":  false,
		"SELECT 1; TRUNCATE ONLY a, b": true,
	} {
		if got := Scan(sql).Truncate; got != want {
			t.Errorf("Scan(%q).Truncate = %v, want %v", sql, got, want)
		}
	}
}

func TestScan(t *testing.T) {
	for _, tc := range []struct {
		sql           string
		kind          Kind
		reads, writes []string
		locking       bool
	}{
		{sql: `SELECT * FROM "users" WHERE "users"."id" = $1 AND "users"."deleted_at" IS NULL ORDER BY "users"."id" LIMIT 1`, kind: Read, reads: []string{"users"}},
		{sql: "SELECT `users`.`id`,`Company`.`id` AS `Company__id` FROM `users` LEFT JOIN `companies` `Company` ON `users`.`company_id` = `Company`.`id`", kind: Read, reads: []string{"users", "companies"}},
		{sql: `select u.name from public.users u, orders as o join "Line Items" li on li.o = o.id where x = 'FROM secrets'`, kind: Read, reads: []string{"users", "orders", "line items"}},
		{sql: `SELECT * FROM (SELECT id FROM posts) AS p JOIN comments c ON c.post_id = p.id`, kind: Read, reads: []string{"posts", "comments"}},
		{sql: `SELECT * FROM generate_series(1, 10)`, kind: Read},
		{sql: `SELECT * FROM users WHERE id = 1 FOR UPDATE`, kind: Read, reads: []string{"users"}, locking: true},
		{sql: `SELECT * FROM users FOR NO KEY UPDATE SKIP LOCKED`, kind: Read, reads: []string{"users"}, locking: true},
		{sql: `SELECT * FROM users FOR SHARE`, kind: Read, reads: []string{"users"}, locking: true},
		{sql: `SELECT * FROM users FOR KEY SHARE`, kind: Read, reads: []string{"users"}, locking: true},
		{sql: `INSERT INTO "users" ("name") VALUES ($1) RETURNING "id"`, kind: Write, writes: []string{"users"}},
		{sql: `INSERT INTO users (name) VALUES (?) ON CONFLICT (id) DO UPDATE SET name = excluded.name`, kind: Write, writes: []string{"users"}},
		{sql: "INSERT INTO `users` (`name`) VALUES (?) ON DUPLICATE KEY UPDATE `name`=VALUES(`name`)", kind: Write, writes: []string{"users"}},
		{sql: `INSERT OR REPLACE INTO users (id) VALUES (1)`, kind: Write, writes: []string{"users"}},
		{sql: `INSERT INTO archive SELECT * FROM users`, kind: Write, writes: []string{"archive"}, reads: []string{"users"}},
		{sql: `UPDATE "users" SET "name"=$1 WHERE "id" = $2`, kind: Write, writes: []string{"users"}},
		{sql: `UPDATE ONLY users SET a = 1`, kind: Write, writes: []string{"users"}},
		{sql: `UPDATE users SET n = 1 FROM orders WHERE orders.user_id = users.id`, kind: Write, writes: []string{"users"}, reads: []string{"orders"}},
		{sql: `DELETE FROM "posts" WHERE "posts"."id" = $1`, kind: Write, writes: []string{"posts"}},
		{sql: `delete from posts; update users set x = 1`, kind: Write, writes: []string{"posts", "users"}},
		{sql: `TRUNCATE TABLE a, public.b RESTART IDENTITY`, kind: Write, writes: []string{"a", "b"}},
		{sql: `TRUNCATE c`, kind: Write, writes: []string{"c"}},
		{sql: `REFRESH MATERIALIZED VIEW public.sale_sums`, kind: Write, writes: []string{"sale_sums"}},
		{sql: `refresh materialized view concurrently "Sale Sums" WITH DATA`, kind: Write, writes: []string{"sale sums"}},
		{sql: `REFRESH COLLATION VERSION`, kind: Unknown},
		{sql: `REPLACE INTO kv VALUES (1, 2)`, kind: Write, writes: []string{"kv"}},
		{sql: `MERGE INTO target t USING source s ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v`, kind: Write, writes: []string{"target"}, reads: nil},
		{sql: `WITH moved AS (DELETE FROM queue WHERE id < 10 RETURNING *) INSERT INTO done SELECT * FROM moved`, kind: Write, writes: []string{"queue", "done"}, reads: []string{"moved"}},
		{sql: `WITH x AS (SELECT 1) SELECT * FROM x JOIN users ON true`, kind: Read, reads: []string{"x", "users"}},
		{sql: `CREATE TABLE t (id int)`, kind: Unknown},
		{sql: `CALL refresh_all()`, kind: Unknown},
		{sql: `DO $$ BEGIN UPDATE users SET a = 1; END $$`, kind: Unknown},
		{sql: `SELECT $tag$ FROM fake $tag$ FROM real_table`, kind: Read, reads: []string{"real_table"}},
		{sql: `-- FROM commented
SELECT 1 /* FROM hidden */ FROM shown`, kind: Read, reads: []string{"shown"}},
		{sql: `BEGIN`, kind: Control},
		{sql: ``, kind: Control},
	} {
		st := Scan(tc.sql)
		if st.Kind != tc.kind || !same(st.Reads, tc.reads) || !same(st.Writes, tc.writes) || st.Locking != tc.locking {
			t.Errorf("Scan(%q) = kind %d reads %q writes %q locking %v; want kind %d reads %q writes %q locking %v",
				tc.sql, st.Kind, st.Reads, st.Writes, st.Locking, tc.kind, tc.reads, tc.writes, tc.locking)
		}
	}
}

func TestSavepoints(t *testing.T) {
	if st := Scan("SAVEPOINT sp123"); st.Savepoint != "sp123" || st.Kind != Control {
		t.Errorf("SAVEPOINT: %+v", st)
	}
	if st := Scan("ROLLBACK TO SAVEPOINT sp123"); st.RollbackTo != "sp123" {
		t.Errorf("ROLLBACK TO SAVEPOINT: %+v", st)
	}
	if st := Scan("ROLLBACK TO sp9"); st.RollbackTo != "sp9" {
		t.Errorf("ROLLBACK TO: %+v", st)
	}
	if st := Scan("RELEASE SAVEPOINT sp1"); st.Release != "sp1" {
		t.Errorf("RELEASE: %+v", st)
	}
}

func FuzzScan(f *testing.F) {
	for _, s := range []string{"SELECT * FROM a JOIN b", "UPDATE x SET", "'", "\"", "$$", "/*", "--", "FROM", "INTO", "TRUNCATE TABLE ,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		_ = Scan(sql) // must never panic
	})
}

func same(a, b []string) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
}
