package dogpile

import "sort"

// What a Plugin is made of, for tools and tests that look at it.

// RegionNames returns the names the plugin's regions were registered under
// (the names FromCache and RelationshipCache take), sorted.
func (p *Plugin) RegionNames() []string {
	names := make([]string, 0, len(p.regions))
	for name := range p.regions {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}
