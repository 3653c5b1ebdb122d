package region

import (
	"encoding/json"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/dogpile-go/dogpile/internal/mpack"
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
// Its decoders are pooled (internal/mpack): a hit allocates nothing for
// decoding machinery.
func (MsgpackCodec) Unmarshal(data []byte, v any) error {
	unread, err := mpack.Decode(data, v, true)
	if err == nil && unread != 0 {
		err = fmt.Errorf("%d trailing bytes", unread)
	}
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
