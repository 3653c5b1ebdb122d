package redisbackend

import (
	"strconv"
	"strings"
	"sync"
)

// hashPart returns the part of key that Redis Cluster hashes: the content of
// the first {...} when it is non-empty, otherwise the whole key.
func hashPart(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

// hasTag reports whether key has a non-empty hash tag.
func hasTag(key string) bool { return len(hashPart(key)) != len(key) }

// slotCount is the number of Redis Cluster hash slots.
const slotCount = 16384

// slot returns key's Redis Cluster hash slot.
func slot(key string) int { return int(crc16(hashPart(key)) % slotCount) }

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0), the checksum
// Redis Cluster hashes keys with.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc = crc<<8 ^ crcTable[byte(crc>>8)^s[i]]
	}
	return crc
}

var crcTable = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i) << 8
		for range 8 {
			if c&0x8000 != 0 {
				c = c<<1 ^ 0x1021
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

// slotTags maps each slot to a short string that hashes to it; built on
// first use, only for keys whose slot no tag of their own can reproduce.
var slotTags struct {
	once sync.Once
	tags [slotCount]string
}

// tagForSlot returns a string without braces that hashes to slot s.
func tagForSlot(s int) string {
	slotTags.once.Do(func() {
		left := slotCount
		for n := 0; left > 0; n++ {
			t := strconv.Itoa(n)
			if sl := crc16(t) % slotCount; slotTags.tags[sl] == "" {
				slotTags.tags[sl] = t
				left--
			}
		}
	})
	return slotTags.tags[s]
}

// lockSuffix returns the key of the lock on key, relative to the backend
// prefix p (the Redis key is p+lockSuffix), such that it hashes to the same
// Cluster slot as p+key, never equals the lock key of another key, and
// starts with '{', which no key of the region's own layout does:
//
//   - p+key has a hash tag T:        "{T}:lock:" + key
//   - p+key has no '}' at all:       "{" + p + key + "}:lock"
//   - otherwise (e.g. "a{}b", "a}b"): "{S}:lock:" + key, where S is a short
//     string that hashes to the same slot as p+key
//
// p must not contain '{' (New checks it), so the first '{' of the lock key is
// its own and Redis hashes exactly the braced part.
func lockSuffix(p, key string) string {
	full := p + key
	switch {
	case hasTag(full):
		return "{" + hashPart(full) + "}:lock:" + key
	case !strings.Contains(full, "}"):
		return "{" + full + "}:lock"
	default:
		return "{" + tagForSlot(slot(full)) + "}:lock:" + key
	}
}
