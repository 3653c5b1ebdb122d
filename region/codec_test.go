package region_test

import (
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dogpile-go/dogpile/region"
)

type codecUser struct {
	ID      int64
	Name    string
	Email   *string
	Tags    []string
	Attrs   map[string]int
	Created time.Time
	Secret  string `json:"-"`
}

// codecOther has the first field of codecUser and others of its own.
type codecOther struct {
	ID    int64
	Count int
}

// codecNarrow has a subset of codecUser's fields.
type codecNarrow struct {
	ID   int64
	Name string
}

func sampleCodecUser() codecUser {
	email := "alice@example.com"
	return codecUser{
		ID: 7, Name: "Alice", Email: &email, Tags: []string{"a", "b"},
		Attrs:   map[string]int{"x": 1, "y": 2},
		Created: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC),
		Secret:  "s3cret",
	}
}

func roundTrip[T any](t *testing.T, c region.Codec, in T) T {
	t.Helper()
	b, err := c.Marshal(in)
	if err != nil {
		t.Fatalf("%T: marshal %#v: %v", c, in, err)
	}
	var out T
	if err := c.Unmarshal(b, &out); err != nil {
		t.Fatalf("%T: unmarshal %#v: %v", c, in, err)
	}
	return out
}

func TestCodecRoundTrip(t *testing.T) {
	for _, c := range []region.Codec{region.MsgpackCodec{}, region.JSONCodec{}} {
		t.Run(reflect.TypeOf(c).Name(), func(t *testing.T) {
			u := sampleCodecUser()
			got := roundTrip(t, c, u)
			if _, isJSON := c.(region.JSONCodec); isJSON {
				u.Secret = "" // json:"-" is not cached by JSONCodec
			}
			if !got.Created.Equal(u.Created) {
				t.Fatalf("time: got %v, want %v", got.Created, u.Created)
			}
			got.Created = u.Created
			if !reflect.DeepEqual(got, u) {
				t.Fatalf("struct: got %#v, want %#v", got, u)
			}

			if got := roundTrip(t, c, []codecNarrow{{1, "a"}, {2, "b"}}); !reflect.DeepEqual(got, []codecNarrow{{1, "a"}, {2, "b"}}) {
				t.Fatalf("slice: got %#v", got)
			}
			if got := roundTrip(t, c, map[string]int64{"a": 1, "b": -1 << 40}); !reflect.DeepEqual(got, map[string]int64{"a": 1, "b": -1 << 40}) {
				t.Fatalf("map: got %#v", got)
			}
			if got := roundTrip(t, c, "text"); got != "text" {
				t.Fatalf("string: got %q", got)
			}
			if got := roundTrip(t, c, 3.5); got != 3.5 {
				t.Fatalf("float: got %v", got)
			}
			if got := roundTrip(t, c, (*codecNarrow)(nil)); got != nil {
				t.Fatalf("nil pointer: got %#v", got)
			}
			if got := roundTrip(t, c, &codecNarrow{ID: 3}); got == nil || got.ID != 3 {
				t.Fatalf("pointer: got %#v", got)
			}
		})
	}
}

// MsgpackCodec keeps fields tagged json:"-", as its documentation says.
func TestMsgpackKeepsJSONDashFields(t *testing.T) {
	got := roundTrip(t, region.MsgpackCodec{}, sampleCodecUser())
	if got.Secret != "s3cret" {
		t.Fatalf("Secret = %q; MsgpackCodec must keep json:\"-\" fields", got.Secret)
	}
}

// A payload written for another struct shape is an error, not a value half
// read, and so is a payload with bytes after the value.
func TestMsgpackRejectsOtherShapes(t *testing.T) {
	c := region.MsgpackCodec{}
	user, err := c.Marshal(sampleCodecUser())
	if err != nil {
		t.Fatal(err)
	}
	other, err := c.Marshal(codecOther{ID: 1, Count: 2})
	if err != nil {
		t.Fatal(err)
	}

	var n codecNarrow
	if err := c.Unmarshal(user, &n); err == nil {
		t.Fatalf("a codecUser payload decoded into codecNarrow: %#v", n)
	}
	var u codecUser
	if err := c.Unmarshal(other, &u); err == nil {
		t.Fatalf("a codecOther payload decoded into codecUser: %#v", u)
	}
	for _, extra := range [][]byte{{0x00}, {0xc0}, user} {
		var u codecUser
		err := c.Unmarshal(append(append([]byte(nil), user...), extra...), &u)
		if err == nil || !strings.Contains(err.Error(), "trailing") {
			t.Fatalf("payload with %d trailing bytes: err %v; want a trailing-bytes error", len(extra), err)
		}
	}
	// Cut short anywhere, the payload is an error too.
	for i := range len(user) {
		var u codecUser
		if err := c.Unmarshal(user[:i], &u); err == nil {
			t.Fatalf("payload cut to %d of %d bytes decoded: %#v", i, len(user), u)
		}
	}
	// A decoder that failed goes back to the pool in a usable state.
	var ok codecUser
	if err := c.Unmarshal(user, &ok); err != nil || ok.Name != "Alice" {
		t.Fatalf("decode after failures: %#v, %v", ok, err)
	}
}

func TestJSONCodecRejectsGarbage(t *testing.T) {
	var u codecUser
	for _, bad := range []string{"", "{", `{"ID":"seven"}`, "not json"} {
		if err := (region.JSONCodec{}).Unmarshal([]byte(bad), &u); err == nil {
			t.Fatalf("JSONCodec decoded %q", bad)
		}
	}
}

// The pooled msgpack decoders are shared between goroutines (run with -race).
func TestMsgpackConcurrent(t *testing.T) {
	c := region.MsgpackCodec{}
	good, _ := c.Marshal(sampleCodecUser())
	bad, _ := c.Marshal(codecOther{ID: 1, Count: 2})
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				var u codecUser
				if (g+i)%3 == 0 {
					if c.Unmarshal(bad, &u) == nil {
						errs <- "bad payload decoded"
						return
					}
					continue
				}
				if err := c.Unmarshal(good, &u); err != nil || u.Name != "Alice" || len(u.Tags) != 2 {
					errs <- "good payload: " + u.Name
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}
