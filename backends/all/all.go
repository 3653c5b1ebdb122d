// Package all registers every backend shipped with dogpile-go for
// region.FromConfig, by importing their packages: import it, for its
// effect only, to name any of them in a configuration.
//
//	import _ "github.com/dogpile-go/dogpile/backends/all"
package all

import (
	// Each registers its backend from an init function.
	_ "github.com/dogpile-go/dogpile/backends/file"
	_ "github.com/dogpile-go/dogpile/backends/memcache"
	_ "github.com/dogpile-go/dogpile/backends/memory"
	_ "github.com/dogpile-go/dogpile/backends/null"
	_ "github.com/dogpile-go/dogpile/backends/redis"
)
