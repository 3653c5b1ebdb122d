package region

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// Codec turns values into payload bytes and back. Unmarshal decodes into v,
// which is a non-nil pointer to the caller's type.
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// MsgpackCodec is the default codec (github.com/vmihailenco/msgpack/v5). It
// decodes straight into the caller's type and keeps every exported field,
// including those tagged json:"-".
type MsgpackCodec struct{}

// msgpackReader is a pooled decoder with the reader it reads from, so a hit
// allocates nothing for decoding machinery.
type msgpackReader struct {
	r bytes.Reader
	d *msgpack.Decoder
}

var msgpackReaders = sync.Pool{New: func() any {
	return &msgpackReader{d: msgpack.NewDecoder(nil)}
}}

// Marshal encodes v.
func (MsgpackCodec) Marshal(v any) ([]byte, error) {
	b, err := msgpack.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("msgpack: %w", err)
	}
	return b, nil
}

// Unmarshal decodes data into v. Unknown fields and trailing bytes are
// errors, so a payload written for another type is not silently half-read.
func (MsgpackCodec) Unmarshal(data []byte, v any) error {
	mr := msgpackReaders.Get().(*msgpackReader)
	mr.r.Reset(data)
	mr.d.Reset(&mr.r)
	// Unknown fields mean the payload was written for another shape.
	mr.d.DisallowUnknownFields(true)
	err := mr.d.Decode(v)
	if err == nil && mr.r.Len() != 0 {
		err = fmt.Errorf("%d trailing bytes", mr.r.Len())
	}
	mr.r.Reset(nil)
	mr.d.Reset(nil)
	msgpackReaders.Put(mr)
	if err != nil {
		return fmt.Errorf("msgpack: %w", err)
	}
	return nil
}

// JSONCodec encodes values as JSON (encoding/json). It follows json tags, so
// fields tagged json:"-" are not cached.
type JSONCodec struct{}

// Marshal encodes v.
func (JSONCodec) Marshal(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("json: %w", err)
	}
	return b, nil
}

// Unmarshal decodes data into v.
func (JSONCodec) Unmarshal(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("json: %w", err)
	}
	return nil
}
