package region

// Features is what a region found in its backend: the optional interfaces
// it uses.
type Features struct {
	Local, CounterRefs, ValueAppender, TagBumper, Timeout bool
}

// FeaturesOf returns the optional interfaces r uses, for the tests of
// wrappers in package region_test.
func FeaturesOf(r *Region) Features {
	return Features{Local: r.local, CounterRefs: r.refs != nil, ValueAppender: r.values != nil, TagBumper: r.bumper != nil, Timeout: r.timeouts != nil}
}

// MutexFeatures reports whether a region takes m as a Fencer and as a
// LockProber.
func MutexFeatures(m Mutex) (fencer, prober bool) {
	_, fencer = optional[Fencer](m)
	_, prober = optional[LockProber](m)
	return fencer, prober
}
