// Package answer is how the GORM plugin stores a query's answer and hands
// it to callers, with nothing of GORM in it:
//
//   - result.go: the answer format (Result, encoded with the region's codec
//     or, with the default codec, as compact msgpack), and the one rule of
//     which caller gets which copy of an answer (Result.For);
//   - maps.go: rows scanned into maps, with each value's Go type kept;
//   - memo.go: the decoded-answer memo (Memo), which serves a hit whose bytes
//     it already decoded by copying instead of decoding, and Slice, an answer
//     on its way into a window of a larger destination;
//   - deepcopy.go: the deep copier that memo and For copy with.
//
// Callers never share memory with each other or with the memo: every value
// handed out is the caller's own, or a deep copy.
package answer
