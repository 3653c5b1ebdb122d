package memcachebackend

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
)

// MaxKeyLen is the longest key memcached takes.
const MaxKeyLen = 250

// hashLen is the length of the base64 (unpadded, URL alphabet) of a SHA-256.
const hashLen = 43

// lockNameLen is the length of a lock's name: "#L" and the hash of the key.
const lockNameLen = 2 + hashLen

// maxPrefixLen leaves room after the prefix for the longest key the backend
// makes itself, a lock's.
const maxPrefixLen = MaxKeyLen - lockNameLen

// hash returns the base64 of the SHA-256 of key.
func hash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// legal reports whether memcached takes s as (part of) a key as far as its
// bytes go: no space, no control character, no DEL.
func legal(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// isLockName reports whether k is a lock's name ("#L" + a hash), which the
// backend stores as it is (see key).
func isLockName(k string) bool {
	return len(k) == lockNameLen && k[0] == '#' && k[1] == 'L'
}

// lockName returns the name of the lock on key.
func lockName(key string) string { return "#L" + hash(key) }

// key returns the memcached key under which the backend stores k: the
// prefix and k itself when memcached takes that (at most 250 bytes, no
// space or control byte) and k does not begin with '#'; otherwise the
// prefix, '#' and the base64 of k's SHA-256 (44 bytes). A lock's name (what
// Fence guards) is stored as it is. The three forms never meet: a key kept
// as it is never begins with '#'; a hashed one is '#' and 43 bytes of the
// URL alphabet; a lock's name is "#L" and 43 such bytes, one byte longer.
// A key passed in that has the form of a lock's name is taken for one;
// the region's keys never do, as every one of them holds a ':' (the
// region's prefix ends with one), which a lock's name cannot. So no key the
// region chooses can land on another, or on a lock, unless SHA-256
// collides.
func (b *Backend) key(k string) string {
	if isLockName(k) || (len(b.prefix)+len(k) <= MaxKeyLen && len(b.prefix)+len(k) > 0 && (k == "" || k[0] != '#') && legal(k)) {
		if b.prefix == "" {
			return k
		}
		return b.prefix + k
	}
	return b.prefix + "#" + hash(k)
}

// Key returns the memcached key under which the backend stores key.
func (b *Backend) Key(key string) string { return b.key(key) }

// keys maps keys with key, in a new slice.
func (b *Backend) keys(keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = b.key(k)
	}
	return out
}

// checkPrefix panics if memcached could not take prefix at the start of
// every key.
func checkPrefix(prefix string) {
	if len(prefix) > maxPrefixLen {
		panic(fmt.Sprintf("memcachebackend: prefix %q is %d bytes long; at most %d leave room for the keys", prefix, len(prefix), maxPrefixLen))
	}
	if !legal(prefix) {
		panic(fmt.Sprintf("memcachebackend: prefix %q holds a space or a control character, which memcached keys cannot", prefix))
	}
}
