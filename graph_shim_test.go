package dogpile

// TEMPORARY (h13-graphtests): WithTriggerWrites as the brief specifies it,
// so that the graph tests compile against the stub graph.go. It is deleted
// when main's implementation (which defines the real option) is merged.

// WithTriggerWrites declares the tables table's triggers write.
func WithTriggerWrites(table string, writes ...string) PluginOption {
	return func(c *pluginConfig) {
		if c.triggerWrites == nil {
			c.triggerWrites = map[string][]string{}
		}
		c.triggerWrites[table] = append(c.triggerWrites[table], writes...)
	}
}
