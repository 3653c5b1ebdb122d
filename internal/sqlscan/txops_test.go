package sqlscan

import (
	"reflect"
	"testing"
)

func TestTxOps(t *testing.T) {
	begin := func(l Isolation) TxOp { return TxOp{Kind: TxBegin, Level: l} }
	commit, rollback := TxOp{Kind: TxCommit}, TxOp{Kind: TxRollback}
	set := func(l Isolation, session bool) TxOp { return TxOp{Kind: TxIsolation, Level: l, Session: session} }
	for _, tc := range []struct {
		sql  string
		kind Kind
		ops  []TxOp
	}{
		{"BEGIN", Control, []TxOp{begin(IsolationUnnamed)}},
		{"begin transaction", Control, []TxOp{begin(IsolationUnnamed)}},
		{"BEGIN IMMEDIATE", Control, []TxOp{begin(IsolationUnnamed)}},
		{"BEGIN ISOLATION LEVEL REPEATABLE READ", Control, []TxOp{begin(IsolationRepeatableRead)}},
		{"BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY", Control, []TxOp{begin(IsolationSerializable)}},
		{"START TRANSACTION ISOLATION LEVEL READ COMMITTED", Control, []TxOp{begin(IsolationReadCommitted)}},
		{"START TRANSACTION WITH CONSISTENT SNAPSHOT", Control, []TxOp{begin(IsolationSnapshot)}},
		{"START TRANSACTION READ ONLY", Control, []TxOp{begin(IsolationUnnamed)}},
		{"BEGIN TRY", Control, nil},
		{"COMMIT", Control, []TxOp{commit}},
		{"commit work", Control, []TxOp{commit}},
		{"END TRANSACTION", Control, []TxOp{commit}},
		{"COMMIT AND CHAIN", Control, []TxOp{commit, begin(IsolationUnknown)}},
		{"COMMIT AND NO CHAIN", Control, []TxOp{commit}},
		{"COMMIT PREPARED 'x'", Control, nil},
		{"ROLLBACK", Control, []TxOp{rollback}},
		{"ROLLBACK TRANSACTION", Control, []TxOp{rollback}},
		{"ABORT", Control, []TxOp{rollback}},
		{"ROLLBACK TO SAVEPOINT sp1", Control, nil},
		{"ROLLBACK TRANSACTION TO SAVEPOINT sp1", Control, nil},
		{"ROLLBACK PREPARED 'x'", Control, nil},
		{"PREPARE TRANSACTION 'gid'", Control, []TxOp{{Kind: TxPrepare}}},
		{"PREPARE q AS SELECT 1", Control, nil},
		{"SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", Control, []TxOp{set(IsolationRepeatableRead, false)}},
		{"SET TRANSACTION ISOLATION LEVEL SNAPSHOT", Control, []TxOp{set(IsolationSnapshot, false)}},
		{"SET TRANSACTION SNAPSHOT '00000003-0000001B-1'", Control, []TxOp{set(IsolationSnapshot, false)}},
		{"SET TRANSACTION READ ONLY", Control, nil},
		{"SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE", Control, []TxOp{set(IsolationSerializable, true)}},
		{"SET GLOBAL TRANSACTION ISOLATION LEVEL READ COMMITTED", Control, []TxOp{set(IsolationReadCommitted, true)}},
		{"SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ", Control, []TxOp{set(IsolationRepeatableRead, true)}},
		{"SET default_transaction_isolation = 'repeatable read'", Control, []TxOp{set(IsolationUnknown, true)}},
		{"SET default_transaction_isolation TO serializable", Control, []TxOp{set(IsolationSerializable, true)}},
		{`SET SESSION default_transaction_isolation TO "read committed"`, Control, []TxOp{set(IsolationReadCommitted, true)}},
		{"SET transaction_isolation = 'READ-COMMITTED'", Control, []TxOp{set(IsolationUnknown, true)}},
		{"SET search_path TO public", Control, nil},
		{"SET TRANSACTION ISOLATION LEVEL SOMETHING", Control, []TxOp{set(IsolationUnknown, false)}},
		// Several statements in one text: each is read, and a write makes
		// the text a Write whatever statement comes first.
		{"BEGIN; UPDATE accounts SET n = 1; COMMIT", Write, []TxOp{begin(IsolationUnnamed), commit}},
		{"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE; SELECT * FROM a", Control, []TxOp{set(IsolationSerializable, false)}},
		{"UPDATE a SET n = 1; ROLLBACK", Write, []TxOp{rollback}},
		{"SELECT 'COMMIT; BEGIN' FROM a", Read, nil},
		// A CREATE statement's body does not run now.
		{"CREATE PROCEDURE p() BEGIN UPDATE a SET n = 1; COMMIT; END", Unknown, nil},
		{"SELECT * FROM a", Read, nil},
	} {
		st := Scan(tc.sql)
		if st.Kind != tc.kind || !reflect.DeepEqual(st.Tx, tc.ops) {
			t.Errorf("Scan(%q) = kind %d ops %+v; want kind %d ops %+v", tc.sql, st.Kind, st.Tx, tc.kind, tc.ops)
		}
	}
}

func TestWritesAfterControl(t *testing.T) {
	for _, tc := range []struct {
		sql    string
		writes []string
	}{
		{"BEGIN; TRUNCATE posts; COMMIT", []string{"posts"}},
		{"SET x = 1; INSERT INTO logs (a) VALUES (1)", []string{"logs"}},
		{"START TRANSACTION; DELETE FROM q WHERE id = 1", []string{"q"}},
	} {
		st := Scan(tc.sql)
		if st.Kind != Write || !same(st.Writes, tc.writes) {
			t.Errorf("Scan(%q) = kind %d writes %q; want a Write of %q", tc.sql, st.Kind, st.Writes, tc.writes)
		}
	}
	if st := Scan("ROLLBACK TRANSACTION TO SAVEPOINT sp7"); st.RollbackTo != "sp7" {
		t.Errorf("ROLLBACK TRANSACTION TO SAVEPOINT: %+v", st)
	}
	if st := Scan("ROLLBACK WORK TO sp8"); st.RollbackTo != "sp8" {
		t.Errorf("ROLLBACK WORK TO: %+v", st)
	}
}
