package region

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
)

func sampleEnvelopes() []envelope {
	return []envelope{
		{},
		{created: 1, expires: 2, dies: 3, hard: 4, soft: 5},
		{created: -1, expires: math.MaxInt64, dies: math.MinInt64, hard: math.MinInt64, soft: math.MaxInt64, payload: []byte("payload")},
		{created: 1767225600000000000, expires: 1767226200000000000, stamps: [][]byte{[]byte("123456789")}, tags: []string{"users"}, payload: []byte{0x84, 0xa2, 'I', 'D'}},
		{created: 5, stamps: [][]byte{{}, []byte("7"), bytes.Repeat([]byte("x"), 300)}, tags: []string{"", "t#rows", strings.Repeat("y", 200)}, payload: bytes.Repeat([]byte{0xff}, 1000)},
		{stamps: make([][]byte, 200), tags: make([]string, 200)}, // many empty stamps
	}
}

func equalEnvelopes(a, b *envelope) bool {
	if a.created != b.created || a.expires != b.expires || a.dies != b.dies || a.hard != b.hard || a.soft != b.soft ||
		len(a.stamps) != len(b.stamps) || !bytes.Equal(a.payload, b.payload) || !slices.Equal(a.tags, b.tags) {
		return false
	}
	for i := range a.stamps {
		if !bytes.Equal(a.stamps[i], b.stamps[i]) {
			return false
		}
	}
	return true
}

func TestEnvelopeRoundTrip(t *testing.T) {
	for i, in := range sampleEnvelopes() {
		b := in.marshal()
		if len(b) < 26 {
			t.Fatalf("envelope %d: %d bytes; the header alone is 26", i, len(b))
		}
		if b[0] != envelopeVersion {
			t.Fatalf("envelope %d: version byte %d; want %d", i, b[0], envelopeVersion)
		}
		var out envelope
		if err := parseAll(&out, b); err != nil {
			t.Fatalf("envelope %d: unmarshal: %v", i, err)
		}
		if !equalEnvelopes(&in, &out) {
			t.Fatalf("envelope %d: round trip changed it:\n in  %+v\n out %+v", i, in, out)
		}
		if !bytes.Equal(out.marshal(), b) {
			t.Fatalf("envelope %d: marshal is not stable across a round trip", i)
		}
	}
}

// An envelope is read into a reused variable on the hit path: nothing of a
// previous entry may survive into the next.
func TestEnvelopeUnmarshalResets(t *testing.T) {
	var env envelope
	with := envelope{created: 1, stamps: [][]byte{[]byte("1"), []byte("2")}, payload: []byte("a")}
	if err := parseAll(&env, with.marshal()); err != nil {
		t.Fatal(err)
	}
	without := envelope{created: 2, payload: []byte("b")}
	if err := parseAll(&env, without.marshal()); err != nil {
		t.Fatal(err)
	}
	if !equalEnvelopes(&env, &without) {
		t.Fatalf("reused envelope kept old fields: %+v", env)
	}
}

// headerLen is the length of the envelope's bytes before its payload.
func headerLen(e *envelope) int {
	n := 1 + fixedLen + len(binary.AppendUvarint(nil, uint64(len(e.stamps))))
	for _, s := range e.stamps {
		n += len(binary.AppendUvarint(nil, uint64(len(s)))) + len(s)
	}
	names := len(binary.AppendUvarint(nil, uint64(len(e.tags))))
	for _, t := range e.tags {
		names += len(binary.AppendUvarint(nil, uint64(len(t)))) + len(t)
	}
	return n + len(binary.AppendUvarint(nil, uint64(names))) + names
}

// Any cut inside the header is an error. The payload has no length of its
// own, so a cut inside it parses, with the payload cut short: the codec is
// what rejects that (see the codec tests).
func TestEnvelopeTruncated(t *testing.T) {
	for i, in := range sampleEnvelopes() {
		b := in.marshal()
		h := headerLen(&in)
		for n := range len(b) {
			cut := bytes.Clone(b[:n])
			var out envelope
			err := parseAll(&out, cut)
			if n < h {
				if !errors.Is(err, errBadEnvelope) {
					t.Fatalf("envelope %d cut to %d of %d bytes (header %d): err %v; want errBadEnvelope", i, n, len(b), h, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("envelope %d cut to %d bytes inside its payload: %v", i, n, err)
			}
			if !bytes.Equal(out.payload, in.payload[:n-h]) || len(out.stamps) != len(in.stamps) {
				t.Fatalf("envelope %d cut to %d bytes: got %+v", i, n, out)
			}
		}
	}
}

func header(stampsAndRest ...[]byte) []byte {
	b := make([]byte, 1+fixedLen)
	b[0] = envelopeVersion
	for _, p := range stampsAndRest {
		b = append(b, p...)
	}
	return b
}

func uvarint(n uint64) []byte { return binary.AppendUvarint(nil, n) }

func TestEnvelopeMalformed(t *testing.T) {
	overlong := bytes.Repeat([]byte{0xff}, 10) // more than 64 bits of varint
	overlong = append(overlong, 0x01)
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, errBadEnvelope},
		{"version only", []byte{envelopeVersion}, errBadEnvelope},
		{"other version", append([]byte{envelopeVersion + 1}, make([]byte, 40)...), errOldEnvelope},
		{"version zero", append([]byte{0}, make([]byte, 40)...), errOldEnvelope},
		{"version 2 (before tag names)", append([]byte{2}, make([]byte, 41)...), errOldEnvelope},
		{"no stamp count", header(), errBadEnvelope},
		{"unterminated stamp count", header([]byte{0x80}), errBadEnvelope},
		{"overlong stamp count", header(overlong), errBadEnvelope},
		{"huge stamp count", header(uvarint(math.MaxUint64)), errBadEnvelope},
		{"stamp count past the end", header(uvarint(1<<40), []byte("abc")), errBadEnvelope},
		{"stamp count one past the bytes", header(uvarint(3), []byte{0, 0}), errBadEnvelope},
		{"missing stamp length", header(uvarint(1)), errBadEnvelope},
		{"unterminated stamp length", header(uvarint(1), []byte{0x80}), errBadEnvelope},
		{"overlong stamp length", header(uvarint(1), overlong), errBadEnvelope},
		{"huge stamp length", header(uvarint(1), uvarint(math.MaxUint64), []byte("abc")), errBadEnvelope},
		{"stamp length 2^63", header(uvarint(1), uvarint(1<<63), []byte("abc")), errBadEnvelope},
		{"stamp length one past the end", header(uvarint(1), uvarint(4), []byte("abc")), errBadEnvelope},
		{"second stamp past the end", header(uvarint(2), uvarint(1), []byte("a"), uvarint(2), []byte("b")), errBadEnvelope},
		{"no tag names length", header(uvarint(0)), errBadEnvelope},
		{"unterminated tag names length", header(uvarint(0), []byte{0x80}), errBadEnvelope},
		{"tag names past the end", header(uvarint(0), uvarint(3), []byte{1, 1}), errBadEnvelope},
		{"tag names length 2^63", header(uvarint(0), uvarint(1<<63), []byte("abc")), errBadEnvelope},
		{"empty tag names", header(uvarint(0), uvarint(0)), errBadEnvelope},
		{"tag count past the names", header(uvarint(0), uvarint(1), uvarint(2)), errBadEnvelope},
		{"tag name past the names", header(uvarint(0), uvarint(3), uvarint(1), uvarint(2), []byte("a"), []byte("bc")), errBadEnvelope},
		{"bytes after the names", header(uvarint(0), uvarint(2), uvarint(0), []byte("x")), errBadEnvelope},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var env envelope
			err := parseAll(&env, tc.b)
			if !errors.Is(err, tc.want) {
				t.Fatalf("unmarshal(%x) = %v; want %v", tc.b, err, tc.want)
			}
		})
	}
}

// The largest stamp count the bytes allow (every stamp empty) is valid.
func TestEnvelopeManyEmptyStamps(t *testing.T) {
	const n = 1000
	b := header(uvarint(n), make([]byte, n), uvarint(1), uvarint(0), []byte("p"))
	var env envelope
	if err := parseAll(&env, b); err != nil {
		t.Fatal(err)
	}
	if len(env.stamps) != n || string(env.payload) != "p" {
		t.Fatalf("got %d stamps, payload %q", len(env.stamps), env.payload)
	}
}

func FuzzEnvelope(f *testing.F) {
	for _, e := range sampleEnvelopes() {
		f.Add(e.marshal(), e.created, e.expires, e.dies, []byte("12"), []byte("payload"), uint8(len(e.stamps)))
	}
	f.Add([]byte{}, int64(0), int64(0), int64(0), []byte{}, []byte{}, uint8(0))
	f.Add(header(uvarint(math.MaxUint64)), int64(-1), int64(-1), int64(-1), []byte(nil), []byte(nil), uint8(255))
	f.Add(header(uvarint(1), uvarint(1<<63)), int64(1), int64(2), int64(3), []byte("x"), []byte("y"), uint8(3))

	f.Fuzz(func(t *testing.T, data []byte, created, expires, dies int64, stamp, payload []byte, nstamps uint8) {
		// Arbitrary bytes: an error or an envelope, never a panic; what
		// parses marshals back to bytes that parse to the same envelope.
		var got envelope
		if err := parseAll(&got, data); err == nil {
			if len(got.stamps) > len(data) || len(got.payload) > len(data) {
				t.Fatalf("parsed more than was there: %d stamps, %d payload bytes from %d bytes", len(got.stamps), len(got.payload), len(data))
			}
			var again envelope
			if err := parseAll(&again, got.marshal()); err != nil {
				t.Fatalf("re-marshalled envelope does not parse: %v", err)
			}
			if !equalEnvelopes(&got, &again) {
				t.Fatalf("round trip of a parsed envelope changed it:\n %+v\n %+v", got, again)
			}
		} else if !errors.Is(err, errBadEnvelope) && !errors.Is(err, errOldEnvelope) {
			t.Fatalf("unexpected error %v", err)
		}

		// A valid envelope built from the inputs survives a round trip.
		in := envelope{created: created, expires: expires, dies: dies, payload: payload}
		for i := range int(nstamps % 16) {
			s := stamp
			if i%2 == 1 {
				s = data
			}
			in.stamps = append(in.stamps, s)
		}
		b := in.marshal()
		var out envelope
		if err := parseAll(&out, b); err != nil {
			t.Fatalf("valid envelope %+v: %v", in, err)
		}
		if !equalEnvelopes(&in, &out) {
			t.Fatalf("round trip changed the envelope:\n in  %+v\n out %+v", in, out)
		}
	})
}

// parseAll is unmarshal with the stamps parsed into e.stamps, as marshal
// takes them, so that envelopes compare and re-marshal whole.
func parseAll(e *envelope, b []byte) error {
	err := e.unmarshal(b)
	if err == nil {
		e.stamps = e.stampList()
		e.tags, err = e.tagList()
	}
	return err
}
