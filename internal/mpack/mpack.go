// Package mpack keeps a pool of msgpack decoders (github.com/vmihailenco/msgpack/v5)
// so that decoding a cached value allocates no decoding machinery. It is the
// one place the project pools them: the region's codec and the GORM plugin's
// answer format both decode through Decode.
package mpack

import (
	"bytes"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// reader is a pooled decoder with the reader it reads from.
type reader struct {
	r bytes.Reader
	d *msgpack.Decoder
}

var readers = sync.Pool{New: func() any { return &reader{d: msgpack.NewDecoder(nil)} }}

// Decode decodes one msgpack value from data into v, a non-nil pointer, and
// returns how many bytes of data it left unread. With strict, a map key that
// names no field of the destination struct is an error (the payload was
// written for another shape).
func Decode(data []byte, v any, strict bool) (unread int, err error) {
	rd := readers.Get().(*reader)
	rd.r.Reset(data)
	rd.d.Reset(&rd.r) // also clears the options of the decoder's last use
	rd.d.DisallowUnknownFields(strict)
	err = rd.d.Decode(v)
	unread = rd.r.Len()
	rd.r.Reset(nil)
	rd.d.Reset(nil)
	readers.Put(rd)
	return unread, err
}
