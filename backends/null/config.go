package null

import "github.com/dogpile-go/dogpile/region"

// ConfigName is the name under which the package registers its backend for
// region.FromConfig, when it is imported. It takes no argument.
const ConfigName = "null"

func init() { region.RegisterBackend(ConfigName, fromConfig) }

// fromConfig is the region.BackendFactory of the null backend.
func fromConfig(cfg map[string]string) (region.Backend, error) {
	if err := region.ConfigArgs(cfg).Unknown(); err != nil {
		return nil, err
	}
	return New(), nil
}
