#!/usr/bin/env bash
# bench-region.sh - the cost of a region hit against its floor.
#
# Runs the GetOrCreateHit and BaselineLookupDecode benchmarks of ./region
# (memory backend; the baseline is the backend lookup plus the msgpack decode
# of the same value) five times, then prints for each benchmark the median
# ns/op, B/op and allocs/op, and for each region benchmark its ratio to the
# matching baseline. The target is a ratio of at most 1.3. Nothing is
# asserted: timings depend on the machine.
#
# Usage: scripts/bench-region.sh [extra go test flags...]
# Run it on a quiet machine, never alongside other benchmarks.
set -euo pipefail

cd "$(dirname "$0")/.."

out=$(mktemp)
trap 'rm -f "$out"' EXIT

go test -run '^$' -bench 'GetOrCreateHit|BaselineLookupDecode' -benchmem -count 5 "$@" ./region/ | tee "$out"

echo
awk '
function median(list,    v, n, i, j, t) {
	n = split(list, v, " ")
	for (i = 2; i <= n; i++) {
		t = v[i] + 0
		for (j = i - 1; j >= 1 && v[j] + 0 > t; j--) v[j + 1] = v[j]
		v[j + 1] = t
	}
	if (n % 2) return v[(n + 1) / 2]
	return (v[n / 2] + v[n / 2 + 1]) / 2
}
/^Benchmark/ && $4 == "ns/op" {
	name = $1
	sub(/^Benchmark/, "", name)
	sub(/-[0-9]+$/, "", name)  # GOMAXPROCS suffix
	if (!(name in ns)) order[++count] = name
	ns[name] = ns[name] " " $3
	for (i = 5; i < NF; i++) {
		if ($(i + 1) == "B/op") bytes[name] = bytes[name] " " $i
		if ($(i + 1) == "allocs/op") allocs[name] = allocs[name] " " $i
	}
}
END {
	if (count == 0) { print "no benchmark results" > "/dev/stderr"; exit 1 }
	printf "%-48s %12s %10s %10s\n", "benchmark (median of runs)", "ns/op", "B/op", "allocs/op"
	for (i = 1; i <= count; i++) {
		n = order[i]
		med[n] = median(ns[n])
		printf "%-48s %12.1f %10s %10s\n", n, med[n], median(bytes[n]), median(allocs[n])
	}
	print ""
	printf "%-48s %8s\n", "region / baseline", "ratio"
	for (i = 1; i <= count; i++) {
		n = order[i]
		if (n !~ /^GetOrCreateHit\//) continue
		base = n
		sub(/^GetOrCreateHit\//, "BaselineLookupDecode/", base)
		if (!(base in med) || med[base] == 0) continue
		r = med[n] / med[base]
		printf "%-48s %8.2f%s\n", substr(n, length("GetOrCreateHit/") + 1), r, (r > 1.3 ? "  (over 1.3)" : "")
	}
}' "$out"
