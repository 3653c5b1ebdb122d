// Package filebackend is a region backend on one file: an embedded,
// persistent store (bbolt, go.etcd.io/bbolt) that the processes of one host
// share, bounded in size, with a time to live per entry. It is dogpile.cache's
// DBM backend done so that several processes can use it at once: the dogpile
// lock is per key, not one lock for the whole file, and a holder that dies
// blocks no one.
//
//	b, err := filebackend.New("/var/cache/myapp", filebackend.WithMaxBytes(512<<20))
//	if err != nil { ... }
//	defer b.Close()
//	r := region.New(b, region.WithExpiration(10*time.Minute))
//
// Unix only: the locks are flock(2) locks. The files are made for the
// user running the process (mode 0600, directories 0700). Keys are at most
// 32760 bytes (bbolt's limit less the 8 bytes the indexes add); pair longer
// ones with region.HashMangler.
//
// # Files
//
// In the directory given to New:
//
//	data.db       the bbolt file: every entry, counter and index
//	store.lock    the store lock: shared while a process reads data.db, exclusive while one writes it
//	writer.lock   held by a writer from before it waits for the store lock (writer preference)
//	wait.lock     shared by every process waiting for the store lock (the queue)
//	keys/<hash>   the dogpile lock of one key (hash: the first 128 bits of its SHA-256, in hex)
//
// # Sharing the file
//
// bbolt takes an exclusive flock on its file for a read-write open, so two
// processes cannot keep the same file open for writing. A process here
// opens data.db only while it holds the store lock, and closes it before
// releasing it; so no process ever reads a file another is writing, and a
// reader always sees the last commit. The costs and the rules:
//
//   - A read opens the file read-only under a shared store lock: readers of
//     every process read at once. A write opens it read-write under the
//     exclusive store lock. A writer first takes writer.lock exclusively, and
//     readers come in only while writer.lock is free, so a stream of
//     readers cannot starve a writer.
//   - Opening bbolt costs 50 to 100µs (open, flock, mmap, the page faults
//     of the first reads, munmap and close; measured on a loaded 2-core
//     machine, where a read on an open handle costs 5 to 8µs): too much for
//     every hit. So once a process has opened the file, the operations its
//     goroutines start meanwhile use that handle, for at most the hold
//     (WithHold, default 2ms); the handle is closed when the hold ends, or
//     earlier once the process has made no operation for 1ms, and in any
//     case once the operations in flight are done. A process whose
//     operations come back to back opens the file about once per hold.
//   - A process that waits for the store lock holds wait.lock shared while
//     it waits. A holder looks at wait.lock (an exclusive flock tried and
//     dropped) at the end of its operations, at most every 100µs, and every
//     1ms while idle: when a process waits, it closes the handle at once
//     instead of at the end of its hold, then, before it opens the file
//     again, gives way for up to 2ms, until no process waits (the one it
//     yielded to has the lock). So processes take turns: another process
//     waits for the operations in flight and a poll, not for the hold.
//   - A lock that another process holds is polled (flock with LOCK_NB),
//     from 20µs doubling up to 1ms between tries, for at most the timeout
//     (WithTimeout, default 1s); then the operation fails with ErrBusy,
//     which a region turns into a miss. The backend reports the timeout
//     (Timeout), so a region bounds what one call spends waiting. flock
//     locks are released by the kernel when their process exits, so a
//     process killed while it holds the file (or waits for it) blocks no
//     one afterwards.
//   - bbolt's own flock on data.db is taken too, as a second guard: with
//     the store lock held it is always free, except against a program that
//     opens data.db without the store lock.
//
// A goroutine that needs to write while its process holds a read-only
// handle waits for that handle's operations to end, then opens the file
// read-write; readers that come meanwhile wait for it and then share it.
// The locks are advisory: they hold against the processes that take them,
// as every Backend does (and bbolt's own flock against those that open
// data.db with bbolt).
//
// # Dogpile lock
//
// Mutex(key) returns a Lock: an exclusive flock on keys/<hash of key>. Keys
// never wait for each other. The holder removes the file when it unlocks,
// while still holding it; TryLock checks, once it has the flock, that the
// file it locked is still the one at the path, and tries again otherwise,
// so the removal never lets two processes hold the lock. Wait polls the
// file (1ms doubling up to 20ms). There is no lease: the kernel releases the
// flock the moment its holder exits, by any means, and a holder that lives
// holds it until it unlocks (a region's waiters stop waiting after its wait
// timeout). For the same reason the lock needs no fence: it cannot pass to
// another process while its holder holds it. The file of a holder that died
// stays until the key is locked and unlocked again.
//
// # Entries
//
// Each entry is a record in the values bucket: a format byte, the absolute
// expiry (wall clock, unix nanoseconds; 0 for none), a CRC-32C of the key,
// the header and the value, then the value. An expired record reads as
// missing. A record whose format or checksum does not match reads as
// missing too (Stats().Corrupt counts them): a damaged file never yields
// bytes that were not stored under that key. GetMulti reads all its keys in
// one read-only transaction; SetMulti, SetIf, Delete, Incr and BumpTags
// are one read-write transaction each, and SetIf checks its guards in the
// transaction that writes, atomically for every process. A counter is a
// value in decimal text, with no expiry; a missing or unreadable one starts
// from a random 48-bit value (Incr). Entries survive the process (what was
// committed is in the file, and the page cache keeps it when the process
// dies); with WithSync they also survive a crash of the machine.
//
// # Eviction
//
// The file is bounded by what its entries weigh (WithMaxBytes, default
// 256MiB; see there how entries are weighed) and optionally by their
// number (WithMaxEntries). Every write transaction, after its own writes,
// removes up to 32 expired entries, then, while a bound is exceeded,
// removes the expired entries (soonest expired first) and then the least
// recently accessed ones, through two indexes: expiry ‖ key and
// access ‖ key. An entry is accessed when it is written, and when it is
// read: reads are read-only transactions, so a process remembers what it
// read (up to 4096 keys) and writes those accesses with its next write
// transaction, or at the latest after WithStampFlush (default 1s). Between
// two processes the order is therefore approximate: one process's reads
// count for eviction only once that process has written them. The file
// does not shrink (bbolt reuses freed pages rather than returning them),
// so its size stays near the size its bound allowed at its largest.
//
// # Damaged files
//
// A file that bbolt cannot open as a database, or in which a transaction
// finds a damaged page (bbolt panics; the backend recovers the panic), is
// ErrCorrupt: the operation fails, which a region reads as a miss, and the
// next operation, under the exclusive store lock, removes the file (unless
// another process has replaced it already) and starts an empty one
// (Stats().Resets counts it). New does the same with the file it finds. A
// valid bbolt file that is not this backend's (it has buckets of its own)
// is never removed: New fails with ErrForeign.
package filebackend
