package answer

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"reflect"
	"sync"
)

// Rows are the rows a query's database sent, as its driver returned them:
// what an answer the codec cannot carry (StoredAsRows) is stored as. A hit
// gives them back to the query's own scan through database/sql (Replay), so
// every conversion, Scanner and serializer runs exactly as it did on the
// miss.
type Rows struct {
	columns []string
	values  [][]any // per row, per column: a driver.Value
}

// ReadRows reads every row of r as the driver's values, and closes r. It
// returns the rows read before any error.
func ReadRows(r *sql.Rows) (*Rows, error) {
	defer r.Close()
	cols, err := r.Columns()
	if err != nil {
		return nil, err
	}
	rs := &Rows{columns: cols}
	ptrs := make([]any, len(cols))
	for r.Next() {
		vals := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i] // database/sql stores the driver's value, []byte copied
		}
		if err := r.Scan(ptrs...); err != nil {
			return rs, err
		}
		rs.values = append(rs.values, vals)
	}
	if err := r.Err(); err != nil {
		return rs, err
	}
	return rs, r.Close()
}

// Len returns how many rows there are.
func (rs *Rows) Len() int { return len(rs.values) }

// Pick returns the rows at idx, in that order (sharing their values).
func (rs *Rows) Pick(idx []int) *Rows {
	out := &Rows{columns: rs.columns, values: make([][]any, len(idx))}
	for j, i := range idx {
		out.values[j] = rs.values[i]
	}
	return out
}

// Replay returns the rows as *sql.Rows, for the query's own scan.
func (rs *Rows) Replay(ctx context.Context) (*sql.Rows, error) {
	return replayDB().QueryContext(ctx, "replay", replaySet{rs})
}

// storedRows is how Rows are encoded (as msgpack): each value with its Go
// type.
type storedRows struct {
	Columns []string
	Rows    [][]typedValue
}

func (rs *Rows) encode() ([]byte, error) {
	out := storedRows{Columns: rs.columns, Rows: make([][]typedValue, len(rs.values))}
	for i, row := range rs.values {
		tr := make([]typedValue, len(row))
		for j, x := range row {
			tv, err := toTyped(x)
			if err != nil {
				return nil, err
			}
			tr[j] = tv
		}
		out.Rows[i] = tr
	}
	return compactMarshal(out)
}

var errNoRescanner = errors.New("dogpile: an answer stored as rows, read without a Rescanner")

// decodeRows reads rows stored by encode and scans them into dest with rs.
func decodeRows(b []byte, dest reflect.Value, rs Rescanner) error {
	if rs == nil {
		return errNoRescanner
	}
	var in storedRows
	if err := compactUnmarshal(b, &in); err != nil {
		return err
	}
	rows := &Rows{columns: in.Columns, values: make([][]any, len(in.Rows))}
	for i, tr := range in.Rows {
		if len(tr) != len(in.Columns) {
			return errResultFormat // every row has a value per column
		}
		row := make([]any, len(tr))
		for j, tv := range tr {
			x, err := fromTyped(tv)
			if err != nil {
				return err
			}
			row[j] = x
		}
		rows.values[i] = row
	}
	sr, err := rows.Replay(context.Background())
	if err != nil {
		return err
	}
	dest.SetZero()
	return rs.Rescan(dest, sr)
}

// The replay driver: a database/sql driver whose only query returns the
// Rows passed as its one argument. Going through database/sql (rather than
// converting values by hand) gives the scan the very conversions the real
// driver's rows had.

// replaySet carries Rows through database/sql as a query argument.
type replaySet struct{ rows *Rows }

var (
	replayOnce sync.Once
	replayPool *sql.DB
)

// replayDB returns the process's replay database, opened once. It holds no
// resources beyond idle connections, which are plain structs.
func replayDB() *sql.DB {
	replayOnce.Do(func() {
		replayPool = sql.OpenDB(replayConnector{})
		replayPool.SetMaxIdleConns(64)
	})
	return replayPool
}

type replayConnector struct{}

func (replayConnector) Connect(context.Context) (driver.Conn, error) { return replayConn{}, nil }
func (replayConnector) Driver() driver.Driver                        { return replayDriver{} }

type replayDriver struct{}

func (replayDriver) Open(string) (driver.Conn, error) { return replayConn{}, nil }

var errReplayOnly = errors.New("dogpile: the replay connection only replays rows")

type replayConn struct{}

func (replayConn) Prepare(string) (driver.Stmt, error) { return nil, errReplayOnly }
func (replayConn) Close() error                        { return nil }
func (replayConn) Begin() (driver.Tx, error)           { return nil, errReplayOnly }

// CheckNamedValue lets a replaySet through as an argument.
func (replayConn) CheckNamedValue(nv *driver.NamedValue) error {
	if _, ok := nv.Value.(replaySet); ok {
		return nil
	}
	return errReplayOnly
}

// QueryContext returns the rows of its replaySet argument.
func (replayConn) QueryContext(_ context.Context, _ string, args []driver.NamedValue) (driver.Rows, error) {
	if len(args) != 1 {
		return nil, errReplayOnly
	}
	set, ok := args[0].Value.(replaySet)
	if !ok {
		return nil, errReplayOnly
	}
	return &replayRows{rows: set.rows}, nil
}

// replayRows is driver.Rows over Rows.
type replayRows struct {
	rows *Rows
	at   int
}

func (r *replayRows) Columns() []string { return r.rows.columns }
func (r *replayRows) Close() error      { return nil }

func (r *replayRows) Next(dest []driver.Value) error {
	if r.at >= len(r.rows.values) {
		return io.EOF
	}
	for i, x := range r.rows.values[r.at] {
		dest[i] = x
	}
	r.at++
	return nil
}
