package region

import (
	"encoding/binary"
	"errors"
)

// envelopeVersion is the format of the bytes a Region stores. An entry with
// another version is a miss and is regenerated, so a deploy that changes the
// format never misreads old entries. Bump it with any change to the layout.
const envelopeVersion = 1

// envelope is one stored value with its metadata:
//
//	byte     format version
//	int64    created, Unix nanoseconds (big-endian)
//	int64    expires, Unix nanoseconds; 0 never (big-endian)
//	int64    dies, Unix nanoseconds; 0 never (big-endian): past it the
//	         value is a miss, not stale (the invalidation lease)
//	uvarint  number of stamps, then each stamp as uvarint length + bytes
//	rest     payload, as the codec wrote it
//
// The stamps are the values of the entry's tags as read before its value
// was made; the entry is valid only while every tag still holds them.
type envelope struct {
	created int64
	expires int64
	dies    int64
	stamps  [][]byte // what marshal writes; unmarshal leaves it nil
	payload []byte

	// Set by unmarshal: the stamps as stored, read with nextStamp or
	// stampList. Not parsed into slices, so that a hit allocates nothing.
	nstamps   int
	rawStamps []byte
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

var errBadEnvelope = errors.New("region: malformed entry")
var errOldEnvelope = errors.New("region: entry of another format version")

func (e *envelope) marshal() []byte {
	n := 1 + 24 + binary.MaxVarintLen64 + len(e.payload)
	for _, s := range e.stamps {
		n += binary.MaxVarintLen64 + len(s)
	}
	b := make([]byte, 0, n)
	b = append(b, envelopeVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(e.created))
	b = binary.BigEndian.AppendUint64(b, uint64(e.expires))
	b = binary.BigEndian.AppendUint64(b, uint64(e.dies))
	b = binary.AppendUvarint(b, uint64(len(e.stamps)))
	for _, s := range e.stamps {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return append(b, e.payload...)
}

// unmarshal parses b; the envelope's slices alias b.
func (e *envelope) unmarshal(b []byte) error {
	if len(b) == 0 {
		return errBadEnvelope
	}
	if b[0] != envelopeVersion {
		return errOldEnvelope
	}
	if len(b) < 25 {
		return errBadEnvelope
	}
	e.created = int64(binary.BigEndian.Uint64(b[1:]))
	e.expires = int64(binary.BigEndian.Uint64(b[9:]))
	e.dies = int64(binary.BigEndian.Uint64(b[17:]))
	b = b[25:]
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
	e.payload = b
	return nil
}
