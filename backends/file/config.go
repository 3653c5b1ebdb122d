package filebackend

import (
	"errors"

	"github.com/dogpile-go/dogpile/region"
)

// ConfigName is the name under which the package registers its backend for
// region.FromConfig, when it is imported. Its arguments, after the
// configuration's prefix, are:
//
//	dir          the cache's folder (required)
//	max_bytes    WithMaxBytes: bytes, or KiB, MiB, GiB ("512MiB")
//	max_entries  WithMaxEntries (0 or absent: no bound on the count)
//	timeout      WithTimeout, a duration ("1s")
//	hold         WithHold
//	stamp_flush  WithStampFlush
//	sync         WithSync (true or false)
const ConfigName = "file"

func init() { region.RegisterBackend(ConfigName, fromConfig) }

// fromConfig is the region.BackendFactory of the file backend.
func fromConfig(cfg map[string]string) (region.Backend, error) {
	a := region.ConfigArgs(cfg)
	if err := a.Unknown("dir", "max_bytes", "max_entries", "timeout", "hold", "stamp_flush", "sync"); err != nil {
		return nil, err
	}
	dir := a.String("dir", "")
	if dir == "" {
		return nil, &region.ConfigError{Key: "dir", Err: errors.New("missing: the cache's folder")}
	}
	maxBytes, err1 := a.Bytes("max_bytes", DefaultMaxBytes)
	maxEntries, err2 := a.Int("max_entries", 0)
	timeout, err3 := a.Duration("timeout", DefaultTimeout)
	hold, err4 := a.Duration("hold", DefaultHold)
	flush, err5 := a.Duration("stamp_flush", DefaultStampFlush)
	sync, err6 := a.Bool("sync", false)
	if err := errors.Join(err1, err2, err3, err4, err5, err6); err != nil {
		return nil, err
	}
	opts := []Option{WithMaxBytes(maxBytes), WithTimeout(timeout), WithHold(hold), WithStampFlush(flush), WithSync(sync)}
	if maxEntries > 0 {
		opts = append(opts, WithMaxEntries(int64(maxEntries)))
	}
	return New(dir, opts...)
}
