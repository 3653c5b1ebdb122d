// Package dogpileotel exports what a dogpile-go region does as OpenTelemetry
// metrics and spans. It is a module of its own, so that the core module
// keeps no OpenTelemetry dependency.
//
// Instrument registers a region's metrics with a MeterProvider and adds an
// observer to the region (region.Observer) for what only events tell: the
// wait and creator times, the backend errors by operation, and a span
// around each creator run. WrapBackend wraps a backend so that each call
// to it is a span.
//
//	r := region.New(backend, region.WithName("default"), region.WithExpiration(time.Minute))
//	inst, err := dogpileotel.Instrument(r) // otel's global providers
//	if err != nil { ... }
//	defer inst.Close()
//
// # Metrics
//
// Every metric has the attribute dogpile.region, the region's name. The
// counters below are asynchronous: they are read from the region's Stats
// when the metrics are collected, so that a hit costs the instrumentation
// nothing; they count from the region's creation, whenever Instrument was
// called.
//
//	dogpile.region.hits                     {hit}           fresh values served (Stats.Hits)
//	dogpile.region.misses                   {miss}          calls that found no usable value (Stats.Misses)
//	dogpile.region.stale_served             {hit}           expired or soft-invalidated values served (Stats.StaleServed)
//	dogpile.region.regenerations            {regeneration}  creator runs (Stats.Regenerations)
//	dogpile.region.lock_waits               {wait}          callers that waited for another's value (Stats.LockWaits)
//	dogpile.region.decode_failures          {failure}       stored values that could not be read back (Stats.DecodeFailures)
//	dogpile.region.not_stored               {value}         values made but not stored, by reason (Stats.NotStoredBy)
//	dogpile.region.errors                   {error}         backend errors (Stats.Errors)
//	dogpile.region.invalidations            {invalidation}  invalidations that reached the backend (Stats.Invalidations)
//	dogpile.region.invalidation.failures    {invalidation}  invalidations that could not be written (Stats.InvalidationFailures)
//	dogpile.region.invalidation.retries     {attempt}       attempts of the background retrier (Stats.InvalidationRetries)
//	dogpile.region.invalidation.retried     {invalidation}  invalidations the retrier landed (Stats.InvalidationsRetried)
//
// dogpile.region.not_stored has the attribute reason, one of the names of
// region.NotStoredReasons ("should_cache", "tags_changed", "bypassed",
// "unencodable", "partial"); every reason is reported, zero included.
//
// One gauge, also read when the metrics are collected, and only for a
// region whose backend has a circuit breaker (region.BreakerWatcher: the
// Redis and memcached backends):
//
//	dogpile.region.breaker.open             {state}         1 while the backend's circuit breaker is open, 0 while closed
//
// The instruments below are recorded from the region's events, from the
// moment Instrument was called until Close:
//
//	dogpile.region.lock_wait.duration       s               histogram: how long a caller waited for another's value (region.EventWaited)
//	dogpile.region.regeneration.duration    s               histogram: how long a creator ran (region.EventRegenerated), with outcome "ok" or "error"
//	dogpile.region.backend.errors           {error}         counter: backend errors by op, the region's name of the call (region.EventBackendError: "read", "store", "delete", "lock", "invalidate", "tags", "metadata")
//
// # Spans
//
// Each creator run is a span named "dogpile.regenerate", a child of the
// span in the caller's context, with the attributes dogpile.region,
// dogpile.keys (how many keys the run makes), dogpile.tables (the tables
// the values depend on: the region tags that name a table, without the
// "key:" tags of named queries, the "<table>#..." row tags of relationship
// caches and the "*" of queries whose tables are not known) and outcome
// ("ok" or "error"); a run that fails has the status Error and records the
// error. Its context is the creator's: the database query the creator
// makes is a child of it when the database driver is traced.
//
// A backend wrapped by WrapBackend makes a span of each call, named
// "dogpile.backend.<op>" after region's operation names (region.OpGetMulti
// and the others: "dogpile.backend.get_multi", "dogpile.backend.set_if",
// "dogpile.backend.lock", ...), with the attributes dogpile.region,
// dogpile.backend.op and, for reads, dogpile.backend.hits and
// dogpile.backend.misses (the keys found and not found).
package dogpileotel
