package region

import (
	"crypto/sha256"
	"encoding/base64"
)

// HashMangler turns any key into a fixed-length one: the base64 of its
// SHA-256. Use it with WithKeyMangler for backends that limit key length or
// characters.
func HashMangler(key string) string {
	sum := sha256.Sum256([]byte(key))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// LengthMangler hashes only keys longer than max bytes, so short keys stay
// readable in the backend.
func LengthMangler(max int) func(string) string {
	return func(key string) string {
		// A short key that begins with '#' is hashed too, so it can never
		// equal the hash of a long one.
		if len(key) <= max && (key == "" || key[0] != '#') {
			return key
		}
		return "#" + HashMangler(key)
	}
}
