package main

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// describePayload renders a stored payload for a person: an answer the
// GORM plugin cached (its header, then the rows as msgpack), or any msgpack
// value (what the region's default codec writes), as JSON; anything else
// in hex.
func describePayload(p []byte) (kind, text string) {
	if h, rest, ok := answerHeader(p); ok {
		if v, err := decodeOne(rest); err == nil {
			out := map[string]any{"rows_affected": h.rows, "times": h.times, "destination": h.dest, "value": v}
			if b, err := json.MarshalIndent(out, "", "  "); err == nil {
				return "cached query answer as JSON", string(b)
			}
		}
	}
	if v, err := decodeOne(p); err == nil {
		if b, err := json.MarshalIndent(v, "", "  "); err == nil {
			return "msgpack as JSON", string(b)
		}
	}
	return "hex", hex.Dump(p)
}

// answer is the header of a cached query answer (internal/answer/result.go):
// format 1, uvarint RowsAffected, how times are restored, how the
// destination is encoded. Answers whose times carry zones (a block this
// tool does not parse) are shown as their raw msgpack values, or in hex.
type answer struct {
	rows  uint64
	times string
	dest  string
}

func answerHeader(p []byte) (answer, []byte, bool) {
	if len(p) < 4 || p[0] != 1 {
		return answer{}, nil, false
	}
	rows, k := binary.Uvarint(p[1:])
	if k <= 0 || len(p) < 1+k+2 {
		return answer{}, nil, false
	}
	times, dest := p[1+k], p[2+k]
	a := answer{rows: rows}
	switch times {
	case 0:
		a.times = "as decoded"
	case 1:
		a.times = "UTC"
	default:
		return answer{}, nil, false // zoned (2): a zone block follows
	}
	switch dest {
	case 1:
		a.dest = "typed maps"
	case 2:
		a.dest = "the destination's type, structs as arrays"
	case 3:
		a.dest = "the database's rows"
	default:
		return answer{}, nil, false
	}
	return a, p[3+k:], true
}

// decodeOne decodes b, which must hold exactly one msgpack value, into
// values encoding/json can write.
func decodeOne(b []byte) (any, error) {
	r := bytes.NewReader(b)
	dec := msgpack.NewDecoder(r)
	v, err := dec.DecodeInterfaceLoose()
	if err != nil {
		return nil, err
	}
	if _, err := r.ReadByte(); !errors.Is(err, io.EOF) {
		return nil, errors.New("bytes after the value")
	}
	return jsonable(v), nil
}

// jsonable converts what msgpack decodes into what encoding/json writes:
// maps with keys of any type become maps with string keys.
func jsonable(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = jsonable(e)
		}
		return x
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[fmt.Sprint(k)] = jsonable(e)
		}
		return out
	case []any:
		for i, e := range x {
			x[i] = jsonable(e)
		}
		return x
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case []byte:
		return string(x)
	}
	return v
}
