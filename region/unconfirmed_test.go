package region

import (
	"context"
	"errors"
	"testing"
)

// TestUnconfirmedReAddedDuringBumpStays: an invalidation of tag T that
// succeeds must not confirm T when another invalidation of T failed after
// it was sent (its reply arriving last): that later failure's invalidation
// has not landed, so T stays bypassed and retried.
func TestUnconfirmedReAddedDuringBumpStays(t *testing.T) {
	r := New(nopBackend{})
	defer r.Close()
	u := &r.unconfirmed
	u.add("items") // an earlier failure
	at := u.mark() // a bump of items is sent
	u.add("items") // meanwhile another commit's invalidation of items fails
	u.remove("items", at)
	if !u.any([]string{"items"}) {
		t.Fatal("a success sent before a later failure confirmed the tag")
	}
	u.remove("items", u.mark()) // a bump sent after the failure
	if u.any([]string{"items"}) {
		t.Fatal("a success sent after the last failure did not confirm the tag")
	}
}

// nopBackend stores nothing and fails every counter operation, so that the
// retrier of unconfirmed tags never confirms one behind a test's back.
type nopBackend struct{}

func (nopBackend) GetMulti(_ context.Context, keys []string) ([][]byte, error) {
	return make([][]byte, len(keys)), nil
}
func (nopBackend) SetMulti(context.Context, []Item) error             { return nil }
func (nopBackend) SetIf(context.Context, Item, []Guard) (bool, error) { return false, nil }
func (nopBackend) Delete(context.Context, ...string) error            { return nil }
func (nopBackend) Incr(context.Context, string) (int64, error)        { return 0, errNop }
func (nopBackend) Mutex(string) Mutex                                 { return nil }

var errNop = errors.New("nop backend: no counters")
