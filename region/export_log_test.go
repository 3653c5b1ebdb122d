package region

import "time"

// SetLogClock makes the rate limiter of o, an Observer NewLogObserver
// returned, read the time from now; call it before o is used.
func SetLogClock(o Observer, now func() time.Time) { o.(*logObserver).limit.Now = now }
