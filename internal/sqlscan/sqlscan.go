// Package sqlscan finds the tables an SQL statement reads and writes, well
// enough to invalidate a cache: it never has to understand the statement,
// only to find the table names after FROM, JOIN, INTO, UPDATE and friends.
// When it cannot tell what a statement writes, it says so, and the caller
// invalidates everything.
package sqlscan

import "strings"

// Kind is what a statement does to data.
type Kind uint8

// Statement kinds.
const (
	Read    Kind = iota // SELECT, WITH … SELECT, VALUES, SHOW, EXPLAIN, PRAGMA
	Write               // INSERT, UPDATE, DELETE, REPLACE, MERGE, TRUNCATE, UPSERT
	Control             // transaction control and session settings: BEGIN, SAVEPOINT, SET, …
	Unknown             // anything else (DDL, CALL, DO, COPY, …): may write anything
)

// Statement is what Scan found.
type Statement struct {
	Kind Kind
	// Reads are the tables after FROM and JOIN (writes excluded), lower-cased,
	// without quotes or schema; Writes the tables written.
	Reads, Writes []string
	// Locking is set for SELECT … FOR UPDATE / FOR SHARE and the like.
	Locking bool
	// Truncate is set for a statement that truncates tables (TRUNCATE …):
	// with CASCADE it also empties every table that references them,
	// whatever their foreign-key actions.
	Truncate bool
	// DDL is set for a statement that may change the schema: CREATE, ALTER,
	// DROP, RENAME (its Kind is Unknown).
	DDL bool
	// Savepoint is set for SAVEPOINT name, RollbackTo for ROLLBACK
	// [WORK|TRANSACTION] TO [SAVEPOINT] name, Release for RELEASE
	// [SAVEPOINT] name.
	Savepoint, RollbackTo, Release string
	// Tx lists the transaction-control statements of the text (BEGIN,
	// COMMIT, SET TRANSACTION ISOLATION LEVEL, …), in order; nil when it
	// has none.
	Tx []TxOp
}

// TxOpKind is what a transaction-control statement does.
type TxOpKind uint8

// Transaction-control statements.
const (
	// TxBegin opens a transaction: BEGIN [WORK|TRANSACTION|DEFERRED|…],
	// START TRANSACTION, and the new transaction of COMMIT/ROLLBACK AND
	// CHAIN.
	TxBegin TxOpKind = iota + 1
	// TxCommit commits: COMMIT [WORK|TRANSACTION], END [WORK|TRANSACTION]
	// (not COMMIT PREPARED, which commits another session's transaction).
	TxCommit
	// TxRollback rolls back the whole transaction: ROLLBACK
	// [WORK|TRANSACTION] without TO, ABORT (not ROLLBACK PREPARED).
	TxRollback
	// TxPrepare is PREPARE TRANSACTION (two-phase commit): the transaction
	// leaves the session, to be committed later from any session.
	TxPrepare
	// TxIsolation sets an isolation level: SET TRANSACTION ISOLATION LEVEL,
	// SET SESSION CHARACTERISTICS AS TRANSACTION …, SET [SESSION|GLOBAL]
	// TRANSACTION …, SET default_transaction_isolation / transaction_isolation
	// / tx_isolation, SET TRANSACTION SNAPSHOT.
	TxIsolation
)

// Isolation is an isolation level named by a statement.
type Isolation uint8

// Isolation levels.
const (
	IsolationUnnamed         Isolation = iota // none named: the connection's default
	IsolationReadUncommitted                  // READ UNCOMMITTED
	IsolationReadCommitted                    // READ COMMITTED
	IsolationRepeatableRead                   // REPEATABLE READ
	IsolationSerializable                     // SERIALIZABLE
	IsolationSnapshot                         // SNAPSHOT, WITH CONSISTENT SNAPSHOT, SET TRANSACTION SNAPSHOT
	IsolationUnknown                          // named, but not readable here (a quoted value, a word not known)
)

// TxOp is one transaction-control statement.
type TxOp struct {
	Kind TxOpKind
	// Level is the isolation level a TxBegin or TxIsolation names.
	Level Isolation
	// Session is set for a TxIsolation that changes the default of the
	// session (or of the server), not only the current or next transaction.
	// The variable forms (SET transaction_isolation = …) count as session
	// changes: their scope differs between servers.
	Session bool
}

// Scan reads sql. It is forgiving: text it cannot follow is skipped.
func Scan(sql string) (st Statement) {
	toks := tokenize(sql)
	defer func() { laterStatements(&st, toks) }()
	if len(toks) == 0 {
		st.Kind = Control
		return st
	}
	first := toks[0].upper()
	switch first {
	case "SELECT", "WITH", "VALUES", "SHOW", "EXPLAIN", "PRAGMA", "TABLE", "(":
		st.Kind = Read
	case "INSERT", "UPDATE", "DELETE", "REPLACE", "MERGE", "TRUNCATE", "UPSERT":
		st.Kind = Write
	case "REFRESH":
		// REFRESH MATERIALIZED VIEW [CONCURRENTLY] name: writes the view.
		st.Kind = Unknown
		j := 1
		for _, kw := range []string{"MATERIALIZED", "VIEW", "CONCURRENTLY"} {
			if j < len(toks) && toks[j].upper() == kw {
				j++
			}
		}
		if j == 3 || j == 4 {
			if n, _ := tableAt(toks, j); n != "" {
				st.Kind = Write
				st.Writes = []string{n}
				return st
			}
		}
		return st
	case "BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE", "SET", "RESET", "DISCARD", "DEALLOCATE", "PREPARE", "EXECUTE", "LISTEN", "UNLISTEN", "NOTIFY":
		st.Kind = Control
	case "CREATE", "ALTER", "DROP", "RENAME", "DO", "CALL":
		// DDL, or code that may run some.
		st.Kind = Unknown
		st.DDL = true
	default:
		st.Kind = Unknown
	}
	st.Tx = txOps(toks)
	switch first {
	case "SAVEPOINT":
		if len(toks) > 1 {
			st.Savepoint = toks[1].name()
		}
	case "RELEASE":
		if n := nameAfter(toks[1:], "SAVEPOINT"); n != "" {
			st.Release = n
		}
	case "ROLLBACK":
		rest := toks[1:]
		if len(rest) > 0 && (rest[0].upper() == "WORK" || rest[0].upper() == "TRANSACTION") {
			rest = rest[1:]
		}
		if len(rest) > 0 && rest[0].upper() == "TO" {
			st.RollbackTo = nameAfter(rest[1:], "SAVEPOINT")
		}
	}

	wrote := func() { // a write makes any statement but an unknown one a Write
		if st.Kind != Unknown {
			st.Kind = Write
		}
	}
	add := func(list *[]string, name string) {
		for _, n := range *list {
			if n == name {
				return
			}
		}
		*list = append(*list, name)
	}
	for i := 0; i < len(toks); i++ {
		switch toks[i].upper() {
		case "FROM":
			if i > 0 && toks[i-1].upper() == "DELETE" {
				if n, _ := tableAt(toks, i+1); n != "" {
					add(&st.Writes, n)
					wrote()
				}
				continue
			}
			// FROM a [AS x], b [y], …
			j := i + 1
			for j < len(toks) {
				n, next := tableAt(toks, j)
				if n == "" {
					break
				}
				add(&st.Reads, n)
				j = next
				if j < len(toks) && toks[j].text == "," {
					j++
					continue
				}
				break
			}
		case "JOIN":
			if n, _ := tableAt(toks, i+1); n != "" {
				add(&st.Reads, n)
			}
		case "INTO":
			if i > 0 {
				switch toks[i-1].upper() {
				case "INSERT", "REPLACE", "MERGE", "UPSERT", "IGNORE", "OR":
					if n, _ := intoTableAt(toks, i+1); n != "" {
						add(&st.Writes, n)
						wrote()
					}
				}
			}
		case "UPDATE":
			prev := ""
			if i > 0 {
				prev = toks[i-1].upper()
			}
			if prev == "KEY" && i > 1 && toks[i-2].upper() == "DUPLICATE" {
				prev = "ON" // ON DUPLICATE KEY UPDATE
			}
			switch prev {
			case "FOR", "KEY":
				st.Locking = true
			case "DO", "ON":
				// ON CONFLICT … DO UPDATE / ON DUPLICATE KEY UPDATE: the
				// table is the INSERT's.
			default:
				j := i + 1
				if j < len(toks) && toks[j].upper() == "OR" { // UPDATE OR REPLACE (SQLite)
					j += 2
				}
				if j < len(toks) && toks[j].upper() == "ONLY" {
					j++
				}
				if n, _ := tableAt(toks, j); n != "" {
					add(&st.Writes, n)
					wrote()
				}
			}
		case "SHARE":
			// FOR SHARE, FOR KEY SHARE
			if i > 0 && (toks[i-1].upper() == "FOR" || (toks[i-1].upper() == "KEY" && i > 1 && toks[i-2].upper() == "FOR")) {
				st.Locking = true
			}
		case "TRUNCATE":
			st.Truncate = true
			j := i + 1
			if j < len(toks) && toks[j].upper() == "TABLE" {
				j++
			}
			for j < len(toks) {
				if toks[j].upper() == "ONLY" {
					j++
				}
				n, next := tableAt(toks, j)
				if n == "" {
					break
				}
				add(&st.Writes, n)
				wrote()
				j = next
				if j < len(toks) && toks[j].text == "," {
					j++
					continue
				}
				break
			}
		}
	}
	// A table written is not also reported as read.
	reads := st.Reads[:0]
	for _, r := range st.Reads {
		w := false
		for _, x := range st.Writes {
			w = w || x == r
		}
		if !w {
			reads = append(reads, r)
		}
	}
	st.Reads = reads
	if st.Kind == Write && len(st.Writes) == 0 {
		st.Kind = Unknown
	}
	return st
}

// laterStatements folds into st what the statements after the first one of
// a text do beyond what the scan of its tokens found: one that may change
// the schema (CREATE, ALTER, DROP, RENAME, DO, CALL) makes the text DDL,
// and one whose effect cannot be read (those, and any other statement that
// is not a read, a write or transaction control) makes it Unknown.
func laterStatements(st *Statement, toks []token) {
	for i := 1; i < len(toks); i++ {
		if !toks[i-1].semicolon() || toks[i].semicolon() {
			continue
		}
		switch toks[i].upper() {
		case "SELECT", "WITH", "VALUES", "SHOW", "EXPLAIN", "PRAGMA", "TABLE", "(",
			"INSERT", "UPDATE", "DELETE", "REPLACE", "MERGE", "TRUNCATE", "UPSERT",
			"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE", "SET", "RESET", "DISCARD", "DEALLOCATE", "PREPARE", "EXECUTE", "LISTEN", "UNLISTEN", "NOTIFY":
			// Read by the token scan: its tables, its writes, its
			// transaction control.
		case "CREATE", "ALTER", "DROP", "RENAME", "DO", "CALL":
			st.Kind = Unknown
			st.DDL = true
		default:
			st.Kind = Unknown
		}
	}
}

// nameAfter returns the name at toks[0], skipping an optional keyword kw.
func nameAfter(toks []token, kw string) string {
	if len(toks) > 0 && toks[0].upper() == kw {
		toks = toks[1:]
	}
	if len(toks) == 0 {
		return ""
	}
	return toks[0].name()
}

// keywords that end a table reference.
var stop = map[string]bool{
	"WHERE": true, "JOIN": true, "LEFT": true, "RIGHT": true, "INNER": true, "OUTER": true, "FULL": true,
	"CROSS": true, "NATURAL": true, "ON": true, "USING": true, "GROUP": true, "ORDER": true, "LIMIT": true,
	"OFFSET": true, "HAVING": true, "UNION": true, "EXCEPT": true, "INTERSECT": true, "SET": true,
	"VALUES": true, "SELECT": true, "RETURNING": true, "FOR": true, "WINDOW": true, "DEFAULT": true,
	"LATERAL": true, "AS": true, "WITH": true, "FETCH": true, "OUTPUT": true,
}

// tableAt reads a table reference at toks[i]: [schema.]name [[AS] alias].
// It returns the bare, lower-cased table name and the index after the
// reference, or "" when toks[i] does not start one (a subquery, a keyword).
func tableAt(toks []token, i int) (string, int) { return tableRef(toks, i, false) }

// intoTableAt is tableAt where a parenthesis after the name opens a column
// list (INSERT INTO t (a, b)), not a function's arguments.
func intoTableAt(toks []token, i int) (string, int) { return tableRef(toks, i, true) }

func tableRef(toks []token, i int, columns bool) (string, int) {
	if i >= len(toks) || !toks[i].ident() || (!toks[i].quoted && stop[toks[i].upper()]) {
		return "", i
	}
	name := toks[i].name()
	i++
	for i+1 < len(toks) && toks[i].text == "." && toks[i+1].ident() {
		name = toks[i+1].name()
		i += 2
	}
	if i < len(toks) && toks[i].text == "(" && !columns {
		return "", i // a function call such as generate_series(…)
	}
	if i < len(toks) && toks[i].upper() == "AS" {
		i++
	}
	if i < len(toks) && toks[i].ident() && (toks[i].quoted || !stop[toks[i].upper()]) {
		i++ // alias
	}
	return strings.ToLower(name), i
}

type token struct {
	text   string
	quoted bool
}

func (t token) upper() string {
	if t.quoted {
		return ""
	}
	return strings.ToUpper(t.text)
}

func (t token) ident() bool {
	if t.quoted {
		return true
	}
	c := t.text[0]
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

func (t token) name() string { return t.text }

func (t token) semicolon() bool { return !t.quoted && t.text == ";" }

// tokenize splits sql into identifiers (quoted ones unquoted), words and
// single punctuation characters, dropping literals, numbers, parameters and
// comments.
func tokenize(sql string) []token {
	var toks []token
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			for i < len(sql) && sql[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			end := strings.Index(sql[i+2:], "*/")
			if end < 0 {
				return toks
			}
			i += end + 4
		case c == '\'':
			i++
			for i < len(sql) {
				if sql[i] == '\'' {
					if i+1 < len(sql) && sql[i+1] == '\'' {
						i += 2
						continue
					}
					break
				}
				i++
			}
			i++
		case c == '$' && i+1 < len(sql) && (sql[i+1] == '$' || isWord(sql[i+1])) && dollarQuote(sql[i:]) != "":
			tag := dollarQuote(sql[i:])
			end := strings.Index(sql[i+len(tag):], tag)
			if end < 0 {
				return toks
			}
			i += len(tag) + end + len(tag)
		case c == '"' || c == '`' || c == '[':
			closer := c
			if c == '[' {
				closer = ']'
			}
			j := i + 1
			for j < len(sql) && sql[j] != closer {
				j++
			}
			if j > i+1 {
				toks = append(toks, token{text: sql[i+1 : j], quoted: true})
			}
			i = j + 1
		case isWord(c) && !(c >= '0' && c <= '9'):
			j := i
			for j < len(sql) && (isWord(sql[j]) || sql[j] == '$') {
				j++
			}
			toks = append(toks, token{text: sql[i:j]})
			i = j
		case c >= '0' && c <= '9' || c == '?' || c == '$' || c == ':' || c == '@':
			j := i + 1
			for j < len(sql) && (isWord(sql[j]) || sql[j] == '.') {
				j++
			}
			i = j
		default:
			toks = append(toks, token{text: sql[i : i+1]})
			i++
		}
	}
	return toks
}

func isWord(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}

// dollarQuote returns the $tag$ opening a PostgreSQL dollar-quoted string at
// the start of s, or "".
func dollarQuote(s string) string {
	for j := 1; j < len(s); j++ {
		if s[j] == '$' {
			return s[:j+1]
		}
		if !isWord(s[j]) || (j == 1 && s[j] >= '0' && s[j] <= '9') {
			return ""
		}
	}
	return ""
}

// txOps finds the transaction-control statements of toks: the statements
// starting the text or following a semicolon. A CREATE statement's text is
// a body (a procedure's BEGIN … COMMIT; … END) that does not run now.
func txOps(toks []token) []TxOp {
	if toks[0].upper() == "CREATE" {
		return nil
	}
	var ops []TxOp
	for s := 0; s < len(toks); s++ {
		if s > 0 && !toks[s-1].semicolon() || toks[s].semicolon() {
			continue
		}
		e := s
		for e < len(toks) && !toks[e].semicolon() {
			e++
		}
		ops = appendTxOps(ops, toks[s:e])
	}
	return ops
}

// appendTxOps appends the transaction control that the statement st (its
// tokens, without the semicolon) does.
func appendTxOps(ops []TxOp, st []token) []TxOp {
	kw := func(i int) string {
		if i < len(st) {
			return st[i].upper()
		}
		return ""
	}
	switch kw(0) {
	case "BEGIN":
		switch kw(1) {
		case "", "WORK", "TRANSACTION", "TRAN", "DEFERRED", "IMMEDIATE", "EXCLUSIVE",
			"ISOLATION", "READ", "NOT", "DEFERRABLE", "DISTRIBUTED":
			return append(ops, TxOp{Kind: TxBegin, Level: isolationIn(st)})
		}
	case "START":
		if kw(1) == "TRANSACTION" {
			return append(ops, TxOp{Kind: TxBegin, Level: isolationIn(st)})
		}
	case "COMMIT", "END":
		switch kw(1) {
		case "", "WORK", "TRANSACTION", "TRAN", "AND":
			ops = append(ops, TxOp{Kind: TxCommit})
			return appendChain(ops, st)
		}
	case "ROLLBACK", "ABORT":
		i := 1
		if k := kw(1); k == "WORK" || k == "TRANSACTION" || k == "TRAN" {
			i = 2
		}
		switch kw(i) {
		case "", "AND":
			ops = append(ops, TxOp{Kind: TxRollback})
			return appendChain(ops, st)
		}
	case "PREPARE":
		if kw(1) == "TRANSACTION" {
			return append(ops, TxOp{Kind: TxPrepare})
		}
	case "SET":
		i, session := 1, false
		switch kw(1) {
		case "SESSION", "GLOBAL", "LOCAL", "PERSIST", "PERSIST_ONLY":
			i, session = 2, true
		}
		switch k := kw(i); {
		case k == "CHARACTERISTICS": // SET SESSION CHARACTERISTICS AS TRANSACTION …
			if l := isolationIn(st); l != IsolationUnnamed {
				return append(ops, TxOp{Kind: TxIsolation, Level: l, Session: true})
			}
		case k == "TRANSACTION":
			if kw(i+1) == "SNAPSHOT" {
				return append(ops, TxOp{Kind: TxIsolation, Level: IsolationSnapshot, Session: session})
			}
			if l := isolationIn(st); l != IsolationUnnamed {
				return append(ops, TxOp{Kind: TxIsolation, Level: l, Session: session})
			}
		case i < len(st) && isolationVariable(st[i].text):
			// SET [SESSION] default_transaction_isolation {=|TO} value
			j := i + 1
			if k := kw(j); k == "=" || k == "TO" {
				j++
			}
			var words []string
			for ; j < len(st); j++ {
				if !st[j].ident() {
					break
				}
				words = append(words, strings.ToUpper(strings.ReplaceAll(st[j].text, "-", " ")))
			}
			l := levelOf(strings.Join(words, " "))
			if l == IsolationUnnamed {
				l = IsolationUnknown // the value was a literal, dropped by the tokenizer
			}
			return append(ops, TxOp{Kind: TxIsolation, Level: l, Session: true})
		}
	}
	return ops
}

// appendChain appends the transaction that COMMIT/ROLLBACK AND CHAIN opens:
// it keeps its predecessor's level, which is not known here.
func appendChain(ops []TxOp, st []token) []TxOp {
	for i := 1; i+1 < len(st); i++ {
		if st[i].upper() == "AND" && st[i+1].upper() == "CHAIN" {
			return append(ops, TxOp{Kind: TxBegin, Level: IsolationUnknown})
		}
	}
	return ops
}

// isolationVariable reports the server variables that hold an isolation
// level (PostgreSQL's and MySQL's).
func isolationVariable(name string) bool {
	switch strings.ToLower(name) {
	case "default_transaction_isolation", "transaction_isolation", "tx_isolation":
		return true
	}
	return false
}

// isolationIn returns the level an ISOLATION LEVEL clause of st names,
// IsolationSnapshot for WITH CONSISTENT SNAPSHOT, or IsolationUnnamed.
func isolationIn(st []token) Isolation {
	for i := 0; i < len(st); i++ {
		switch st[i].upper() {
		case "ISOLATION":
			if i+1 < len(st) && st[i+1].upper() == "LEVEL" {
				var words []string
				for j := i + 2; j < len(st) && j < i+4; j++ {
					words = append(words, st[j].upper())
				}
				for n := len(words); n > 0; n-- {
					if l := levelOf(strings.Join(words[:n], " ")); l != IsolationUnnamed {
						return l
					}
				}
				return IsolationUnknown
			}
		case "CONSISTENT":
			if i+1 < len(st) && st[i+1].upper() == "SNAPSHOT" {
				return IsolationSnapshot
			}
		}
	}
	return IsolationUnnamed
}

// levelOf reads an isolation level's name (upper case, words separated by
// one space), or returns IsolationUnnamed.
func levelOf(name string) Isolation {
	switch name {
	case "READ UNCOMMITTED":
		return IsolationReadUncommitted
	case "READ COMMITTED":
		return IsolationReadCommitted
	case "REPEATABLE READ":
		return IsolationRepeatableRead
	case "SERIALIZABLE":
		return IsolationSerializable
	case "SNAPSHOT":
		return IsolationSnapshot
	}
	return IsolationUnnamed
}
