package answer

import (
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Time zones. The codec restores an instant but not its location (msgpack
// decodes every time as Local), so an answer records where each of its
// times was: nothing when all are Local, one mode byte when all are UTC, and
// otherwise a zone block listing the location of every non-zero time in the
// order the time walker visits them (zero instants included):
//
//	uvarint  how many locations the block defines
//	per location: byte zoneFixed or zoneNamed, uvarint length and name,
//	              and for a fixed zone its offset in seconds (varint)
//	uvarint  how many times follow
//	per time: uvarint 0 for UTC, 1 for Local, 2+i for the i-th location
//
// A fixed zone (time.FixedZone, as SQLite's driver gives for a stored
// offset) comes back with its name and offset, a named zone (an IANA name
// such as "Europe/Paris") as that zone, loaded once and reused.

const (
	zoneFixed byte = iota
	zoneNamed
)

var errZoneBlock = errors.New("dogpile: malformed time zone block")

// zoneSpec is a location other than UTC and Local.
type zoneSpec struct {
	name   string
	offset int // fixed zones only
	named  bool
}

// zoneOf describes where t is (its location is neither UTC nor Local).
func zoneOf(t time.Time) zoneSpec {
	name := t.Location().String()
	abbr, offset := t.Zone()
	if loc := namedZone(name); loc != nil {
		// The same rules under the same name: restored as that zone.
		if a, o := t.In(loc).Zone(); a == abbr && o == offset {
			return zoneSpec{name: name, named: true}
		}
	}
	return zoneSpec{name: name, offset: offset}
}

// The locations made from zone names and offsets are kept, so that one is
// loaded once and answers share it; the names come from stored bytes (any
// process's, or a corrupted entry's), so each cache stops growing at
// maxZones entries, past which locations are made on every use.
const maxZones = 1024

var (
	namedZones sync.Map // name → *time.Location, or nil when it is not loadable
	fixedZones sync.Map // zoneSpec → *time.Location
	zoneCount  atomic.Int64
)

// keepZone stores v under k in m unless the caches are full.
func keepZone(m *sync.Map, k, v any) {
	if zoneCount.Load() < maxZones {
		if _, loaded := m.LoadOrStore(k, v); !loaded {
			zoneCount.Add(1)
		}
	}
}

// namedZone returns the IANA zone called name, loading it once, or nil.
func namedZone(name string) *time.Location {
	if v, ok := namedZones.Load(name); ok {
		return v.(*time.Location)
	}
	var loc *time.Location
	if name != "" && name != "UTC" && name != "Local" {
		if l, err := time.LoadLocation(name); err == nil {
			loc = l
		}
	}
	keepZone(&namedZones, name, loc)
	return loc
}

// location returns the *time.Location z describes, made once.
func (z zoneSpec) location() *time.Location {
	if z.named {
		if loc := namedZone(z.name); loc != nil {
			return loc
		}
	}
	if v, ok := fixedZones.Load(z); ok {
		return v.(*time.Location)
	}
	loc := time.FixedZone(z.name, z.offset)
	keepZone(&fixedZones, z, loc)
	return loc
}

// zoneRecorder collects the zone block of an answer's times: the location
// of every time, zero instants included (msgpack gives a zero instant back
// in UTC, wherever it was).
type zoneRecorder struct {
	specs []zoneSpec
	index map[*time.Location]uint64 // location → its reference
	refs  []uint64
	// utc and local count the non-zero times in UTC and Local; exact is set
	// by a time that only the zone block restores: in another location, or
	// a zero instant outside UTC.
	utc, local int
	exact      bool
}

func (zr *zoneRecorder) add(t *time.Time) {
	loc := t.Location()
	switch {
	case t.IsZero() && loc != time.UTC:
		zr.exact = true
	case t.IsZero():
	case loc == time.UTC:
		zr.utc++
	case loc == time.Local:
		zr.local++
	default:
		zr.exact = true
	}
	switch loc {
	case time.UTC:
		zr.refs = append(zr.refs, 0)
	case time.Local:
		zr.refs = append(zr.refs, 1)
	default:
		ref, ok := zr.index[loc]
		if !ok {
			if zr.index == nil {
				zr.index = make(map[*time.Location]uint64)
			}
			ref = uint64(2 + len(zr.specs))
			zr.specs = append(zr.specs, zoneOf(*t))
			zr.index[loc] = ref
		}
		zr.refs = append(zr.refs, ref)
	}
}

// appendBlock appends the zone block.
func (zr *zoneRecorder) appendBlock(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(zr.specs)))
	for _, z := range zr.specs {
		kind := zoneFixed
		if z.named {
			kind = zoneNamed
		}
		b = append(b, kind)
		b = binary.AppendUvarint(b, uint64(len(z.name)))
		b = append(b, z.name...)
		if !z.named {
			b = binary.AppendVarint(b, int64(z.offset))
		}
	}
	b = binary.AppendUvarint(b, uint64(len(zr.refs)))
	for _, r := range zr.refs {
		b = binary.AppendUvarint(b, r)
	}
	return b
}

// zoneApplier puts the times of a decoded answer back in their locations.
type zoneApplier struct {
	locs []*time.Location // by reference
	refs []uint64
	err  error
}

// parseZoneBlock reads a zone block from the start of b and returns it with
// the bytes after it.
func parseZoneBlock(b []byte) (*zoneApplier, []byte, error) {
	za := &zoneApplier{locs: []*time.Location{time.UTC, time.Local}}
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	n, ok := next()
	if !ok || n > uint64(len(b)) {
		return nil, nil, errZoneBlock
	}
	for range n {
		if len(b) < 1 {
			return nil, nil, errZoneBlock
		}
		kind := b[0]
		b = b[1:]
		l, ok := next()
		if !ok || l > uint64(len(b)) {
			return nil, nil, errZoneBlock
		}
		z := zoneSpec{name: string(b[:l]), named: kind == zoneNamed}
		b = b[l:]
		if !z.named {
			off, m := binary.Varint(b)
			if m <= 0 {
				return nil, nil, errZoneBlock
			}
			z.offset, b = int(off), b[m:]
		}
		za.locs = append(za.locs, z.location())
	}
	count, ok := next()
	if !ok || count > uint64(len(b)) {
		return nil, nil, errZoneBlock
	}
	za.refs = make([]uint64, count)
	for i := range za.refs {
		if za.refs[i], ok = next(); !ok || za.refs[i] >= uint64(len(za.locs)) {
			return nil, nil, errZoneBlock
		}
	}
	return za, b, nil
}

// apply is the time walker's callback: the next time takes the next
// recorded location. A count that does not match sets err.
func (za *zoneApplier) apply(t *time.Time) {
	if len(za.refs) == 0 {
		za.err = errZoneBlock
		return
	}
	*t = t.In(za.locs[za.refs[0]])
	za.refs = za.refs[1:]
}
