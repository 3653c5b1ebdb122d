package answer

import (
	"fmt"
	"reflect"
	"testing"
	"time"
)

func reviewMapLen(m interface{ Range(func(k, v any) bool) }) int {
	n := 0
	m.Range(func(any, any) bool { n++; return true })
	return n
}

// Review finding: the zone caches (fixedZones, namedZones) keep every zone
// name and offset they are ever asked for, forever: names come from the
// bytes a region returns (a shared backend's payloads: any process, or a
// corrupted entry), and each new named one costs a time.LoadLocation on the
// hit path. 5000 answers with distinct zones leave 5000 entries each; the
// caches should be bounded (or the names validated against what the
// process made).
func TestReviewZoneCachesBounded(t *testing.T) {
	type row struct{ A time.Time }
	const n = 5000
	const bound = 1024
	fixed0, named0 := reviewMapLen(&fixedZones), reviewMapLen(&namedZones)
	at := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	for i := range n {
		in := row{A: at.In(time.FixedZone(fmt.Sprintf("review-%d", i), i))}
		raw, why := encodeResult(reflect.ValueOf(&in), 1, nil)
		if raw == nil {
			t.Fatal(why)
		}
		var out row
		if _, err := decodeResult(raw, reflect.ValueOf(&out).Elem(), nil); err != nil {
			t.Fatal(err)
		}
	}
	if d := reviewMapLen(&fixedZones) - fixed0; d > bound {
		t.Errorf("fixedZones grew by %d entries for %d distinct zones; want at most %d", d, n, bound)
	}
	if d := reviewMapLen(&namedZones) - named0; d > bound {
		t.Errorf("namedZones grew by %d entries for %d distinct zone names; want at most %d", d, n, bound)
	}
}
