package memory

import "github.com/dogpile-go/dogpile/region"

// ConfigName is the name under which the package registers its backend for
// region.FromConfig, when it is imported. Its one argument, after the
// configuration's prefix, is:
//
//	max_bytes   the bound of WithMaxBytes: bytes, or a number of KiB, MiB or GiB
//	            ("256MiB"); the default is DefaultMaxBytes
const ConfigName = "memory"

func init() { region.RegisterBackend(ConfigName, fromConfig) }

// fromConfig is the region.BackendFactory of the memory backend.
func fromConfig(cfg map[string]string) (region.Backend, error) {
	a := region.ConfigArgs(cfg)
	n, err := a.Bytes("max_bytes", DefaultMaxBytes)
	if err != nil {
		return nil, err
	}
	if err := a.Unknown("max_bytes"); err != nil {
		return nil, err
	}
	return New(WithMaxBytes(n)), nil
}
