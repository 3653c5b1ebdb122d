package dogpile

import (
	"context"
	"reflect"

	"github.com/dogpile-go/dogpile/internal/answer"
	"github.com/dogpile-go/dogpile/region"
	"gorm.io/gorm"
	"gorm.io/gorm/schema"
)

// The loader of FromCache queries: what runs the query for the region, off
// the caller's goroutine, and fills the caller's destination from a hit.

// queryLoader runs one FromCache query for the region. Everything it needs is
// captured in the caller's goroutine: Create runs in another one, possibly
// after the caller has gone.
type queryLoader struct {
	stmt     *gorm.Statement // read in Create only for fields GORM never writes after the query callback
	sql      string
	vars     []any
	config   *gorm.Config
	pool     gorm.ConnPool
	schema   *schema.Schema
	destType reflect.Type

	// Used only in the caller's goroutine.
	memo         *answer.Memo
	key          [1]string     // the entry's key, as Load's key list
	dest         reflect.Value // the caller's destination (addressable)
	rowsAffected int64
	err          error   // the scan's error, given with the answer (answer.Result.Err)
	outcome      Outcome // how the region served it (Outcome)
}

// Create runs the query into a fresh value of the destination's type.
func (l *queryLoader) Create(ctx context.Context, keys []string) (map[string]any, error) {
	fresh := reflect.New(l.destType)
	tx := newScanner(ctx, l.config, l.pool, l.schema, l.stmt, fresh)
	sent, queried, err := runScan(ctx, tx, l.pool, l.sql, l.vars, answer.StoredAsRows(l.destType))
	if !queried {
		return nil, err
	}
	// A scan that failed gives its rows and its error, as GORM does; the
	// answer is then not stored.
	return map[string]any{keys[0]: answer.NewResult(fresh, tx.RowsAffected, sent, err)}, nil
}

// Decode fills the caller's destination from a cached answer.
func (l *queryLoader) Decode(key string, c region.Codec, payload []byte) error {
	rows, err := l.memo.Decode(key, payload, l.dest, stmtRescanner{l.stmt})
	if err != nil {
		return err
	}
	l.rowsAffected = rows
	return nil
}

// Adopt fills the caller's destination with the answer a query made
// (answer.Result.For says which callers copy it).
func (l *queryLoader) Adopt(_ string, v any, own bool) bool {
	res := v.(*answer.Result)
	if !res.Fill(l.dest, own) {
		return false
	}
	l.rowsAffected, l.err = res.Rows(), res.Err()
	return true
}
