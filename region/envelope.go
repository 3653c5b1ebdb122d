package region

import (
	"encoding/binary"
	"errors"
)

// envelopeVersion is the format of the bytes a Region stores. An entry with
// another version is a miss and is regenerated, so a deploy that changes the
// format never misreads old entries. Bump it with any change to the layout.
// Version 2 added the region-wide generations (hard, soft), which replaced
// version 1's comparison of created with invalidation times; version 3 the
// names of the tags after the stamps, for inspection (inspect.go).
const envelopeVersion = 3

// envelope is one stored value with its metadata:
//
//	byte     format version
//	int64    created, Unix nanoseconds (big-endian)
//	int64    expires, Unix nanoseconds; 0 never (big-endian)
//	int64    dies, Unix nanoseconds; 0 never (big-endian): past it the
//	         value is a miss, not stale (the invalidation lease)
//	int64    hard, the region's hard generation when the value was made
//	int64    soft, the region's soft generation when the value was made
//	uvarint  number of stamps, then each stamp as uvarint length + bytes
//	uvarint  length of the tag names, then the names: uvarint count, then
//	         each name as uvarint length + bytes
//	rest     payload, as the codec wrote it
//
// The stamps are the values of the entry's tags as read before its value
// was made; the entry is valid only while every tag still holds them. The
// generations are those of the region-wide record, read with the stamps:
// another hard generation makes the entry a miss, another soft one stale.
// The times serve expiry only, never invalidation. The tag names are those
// of the stamps, in their order; only inspection reads them (Entries), so a
// read skips them whole by their length and never parses them.
type envelope struct {
	created int64
	expires int64
	dies    int64
	hard    int64
	soft    int64
	stamps  [][]byte // what marshal writes; unmarshal leaves it nil
	tags    []string // the stamps' tag names, for marshal; unmarshal leaves it nil
	payload []byte

	// Set by unmarshal: the stamps as stored, read with nextStamp or
	// stampList. Not parsed into slices, so that a hit allocates nothing.
	nstamps   int
	rawStamps []byte
	// rawTags is the stored blob of tag names, read with tagList.
	rawTags []byte

	// malformed is set by Region.classify when the entry it was given is
	// not an envelope of any version: the caller that decides what the
	// read was counts it as a decode failure (decodeFailed), once.
	malformed error
}

// nextStamp splits the first stamp off raw stamps that unmarshal checked.
func nextStamp(raw []byte) (stamp, rest []byte) {
	l, k := binary.Uvarint(raw)
	return raw[k : k+int(l)], raw[k+int(l):]
}

// stampList returns the parsed stamps; they alias the unmarshalled bytes.
func (e *envelope) stampList() [][]byte {
	if e.nstamps == 0 {
		return nil
	}
	out := make([][]byte, e.nstamps)
	raw := e.rawStamps
	for i := range out {
		out[i], raw = nextStamp(raw)
	}
	return out
}

// tagList parses the tag names unmarshal left in rawTags.
func (e *envelope) tagList() ([]string, error) {
	b := e.rawTags
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return nil, errBadEnvelope
	}
	b = b[k:]
	var out []string
	if n > 0 {
		out = make([]string, 0, n)
	}
	for range n {
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return nil, errBadEnvelope
		}
		out = append(out, string(b[k:k+int(l)]))
		b = b[k+int(l):]
	}
	if len(b) != 0 {
		return nil, errBadEnvelope
	}
	return out, nil
}

// fixedLen is the length of the fixed fields after the version byte.
const fixedLen = 5 * 8

var errBadEnvelope = errors.New("region: malformed entry")
var errOldEnvelope = errors.New("region: entry of another format version")

func (e *envelope) marshal() []byte {
	n := 1 + fixedLen + binary.MaxVarintLen64 + len(e.payload)
	for _, s := range e.stamps {
		n += binary.MaxVarintLen64 + len(s)
	}
	tagsLen := uvarintLen(uint64(len(e.tags)))
	for _, t := range e.tags {
		tagsLen += uvarintLen(uint64(len(t))) + len(t)
	}
	n += binary.MaxVarintLen64 + tagsLen
	b := make([]byte, 0, n)
	b = append(b, envelopeVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(e.created))
	b = binary.BigEndian.AppendUint64(b, uint64(e.expires))
	b = binary.BigEndian.AppendUint64(b, uint64(e.dies))
	b = binary.BigEndian.AppendUint64(b, uint64(e.hard))
	b = binary.BigEndian.AppendUint64(b, uint64(e.soft))
	b = binary.AppendUvarint(b, uint64(len(e.stamps)))
	for _, s := range e.stamps {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, uint64(tagsLen))
	b = binary.AppendUvarint(b, uint64(len(e.tags)))
	for _, t := range e.tags {
		b = binary.AppendUvarint(b, uint64(len(t)))
		b = append(b, t...)
	}
	return append(b, e.payload...)
}

// uvarintLen is the length of n as a uvarint.
func uvarintLen(n uint64) int {
	l := 1
	for n >= 0x80 {
		n >>= 7
		l++
	}
	return l
}

// unmarshal parses b; the envelope's slices alias b.
func (e *envelope) unmarshal(b []byte) error {
	if len(b) == 0 {
		return errBadEnvelope
	}
	if b[0] != envelopeVersion {
		return errOldEnvelope
	}
	if len(b) < 1+fixedLen {
		return errBadEnvelope
	}
	e.created = int64(binary.BigEndian.Uint64(b[1:]))
	e.expires = int64(binary.BigEndian.Uint64(b[9:]))
	e.dies = int64(binary.BigEndian.Uint64(b[17:]))
	e.hard = int64(binary.BigEndian.Uint64(b[25:]))
	e.soft = int64(binary.BigEndian.Uint64(b[33:]))
	b = b[1+fixedLen:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return errBadEnvelope
	}
	b = b[k:]
	e.stamps, e.nstamps = nil, int(n)
	start := b
	for range n {
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return errBadEnvelope
		}
		b = b[k+int(l):]
	}
	e.rawStamps = start[:len(start)-len(b)]
	l, k := binary.Uvarint(b)
	if k <= 0 || l > uint64(len(b)-k) {
		return errBadEnvelope
	}
	e.tags, e.rawTags = nil, b[k:k+int(l)]
	e.payload = b[k+int(l):]
	return nil
}
