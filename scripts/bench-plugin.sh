#!/usr/bin/env bash
# bench-plugin.sh - what a FromCache or RelationshipCache hit costs against
# the uncached query and against GORM's own floor, measured in the same runs.
#
# Builds the root package's test binary once, runs its FirstByPK, Find25 and
# RcPreload benchmarks RUNS times (default 8; each run is one process, so
# machine noise hits both sides of a ratio alike), computes every ratio
# within each run, and prints the median ns/op of each benchmark and the
# median of each ratio with its target. Nothing is asserted: timings depend
# on the machine. The RcPreloadPostgres pair needs a PostgreSQL server
# (started by the test harness); without one its benchmarks are skipped.
#
# Usage: scripts/bench-plugin.sh [bench regexp]   (RUNS=N to change the runs)
# Run it on a quiet machine, never alongside other benchmarks.
set -euo pipefail

cd "$(dirname "$0")/.."
pattern=${1:-'FirstByPK|Find25|RcPreload'}
runs=${RUNS:-8}

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
go test -c -o "$dir/dogpile.test" .
for i in $(seq "$runs"); do
	echo "run $i" >>"$dir/out"
	(cd "$dir" && ./dogpile.test -test.run '^$' -test.bench "$pattern" -test.benchmem) | grep '^Benchmark' | tee -a "$dir/out"
done

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
# pair(label, numerator, denominator, target, kind): kind "min" or "max" sets
# which side of the target passes; "info" pairs have no target.
function pair(label, num, den, target, kind) {
	labels[++npairs] = label; nums[npairs] = num; dens[npairs] = den
	targets[npairs] = target; kinds[npairs] = kind
}
BEGIN {
	pair("FirstByPK  uncached / hit", "FirstByPK/uncached", "FirstByPK/fromcache-hit", 3, "min")
	pair("FirstByPK  hit / floor", "FirstByPK/fromcache-hit", "FirstByPK/floor-build-and-decode", 1.3, "max")
	pair("FirstByPK  hit after 100k SQL texts / hit", "FirstByPK/fromcache-hit-after-100k-sql", "FirstByPK/fromcache-hit", 1.1, "max")
	pair("FirstByPK  uncached / hit, decoding", "FirstByPK/uncached", "FirstByPK/fromcache-hit-decoding", 0, "info")
	pair("FirstByPK  hit, decoding / floor", "FirstByPK/fromcache-hit-decoding", "FirstByPK/floor-build-and-decode", 0, "info")
	pair("Find25     uncached / hit", "Find25/uncached", "Find25/fromcache-hit", 4, "min")
	pair("Find25     hit / floor", "Find25/fromcache-hit", "Find25/floor-build-and-decode", 1.3, "max")
	pair("Find25     uncached / hit, decoding", "Find25/uncached", "Find25/fromcache-hit-decoding", 0, "info")
	pair("Find25     hit, decoding / floor", "Find25/fromcache-hit-decoding", "Find25/floor-build-and-decode", 0, "info")
	pair("RcPreload  uncached / all hits (SQLite)", "RcPreload/Uncached", "RcPreload/AllHits", 5, "min")
	pair("RcPreload  uncached / all hits (PostgreSQL)", "RcPreloadPostgres/Uncached", "RcPreloadPostgres/AllHits", 5, "min")
}
/^run / { run = $2; next }
/^Benchmark/ && $4 == "ns/op" {
	name = $1
	sub(/^Benchmark/, "", name)
	sub(/-[0-9]+$/, "", name)
	if (!(name in all)) order[++count] = name
	all[name] = all[name] " " $3
	at[name, run] = $3
	for (i = 5; i < NF; i++) if ($(i + 1) == "allocs/op") allocs[name] = allocs[name] " " $i
}
END {
	if (count == 0) { print "no benchmark results" > "/dev/stderr"; exit 1 }
	printf "%-44s %12s %10s\n", "benchmark (median of runs)", "ns/op", "allocs/op"
	for (i = 1; i <= count; i++) printf "%-44s %12.0f %10s\n", order[i], median(all[order[i]]), median(allocs[order[i]])
	print ""
	printf "%-44s %8s %8s   %s\n", "ratio (median of per-run ratios)", "ratio", "target", "per run"
	for (p = 1; p <= npairs; p++) {
		list = ""
		for (r = 1; r <= run; r++)
			if ((nums[p], r) in at && (dens[p], r) in at && at[dens[p], r] > 0)
				list = list " " sprintf("%.2f", at[nums[p], r] / at[dens[p], r])
		if (list == "") continue
		m = median(list)
		if (kinds[p] == "info") {
			printf "%-44s %8.2f %9s  %s\n", labels[p], m, "-", list
			continue
		}
		ok = (kinds[p] == "min") ? (m >= targets[p]) : (m <= targets[p])
		printf "%-44s %8.2f %7s%s  %s%s\n", labels[p], m, (kinds[p] == "min" ? ">=" : "<="), targets[p], list, (ok ? "" : "   (target missed)")
	}
}' "$dir/out"
