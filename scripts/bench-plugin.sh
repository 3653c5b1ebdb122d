#!/usr/bin/env bash
# bench-plugin.sh - what a FromCache or RelationshipCache hit costs against
# the uncached query and against GORM's own floor, measured in the same runs.
#
# Builds the root package's test binary once, runs its Inline*, FirstByPK,
# Find25 and RcPreload benchmarks RUNS times (default 8; each run is one
# process, so machine noise hits both sides of a ratio alike), computes every
# ratio within each run, and prints the median ns/op and allocs/op of each
# benchmark and the median of each ratio with its target. Nothing is
# asserted: timings depend on the machine. The RcPreloadPostgres pair needs
# a PostgreSQL server (started by the test harness); without one its
# benchmarks are skipped.
#
# The Inline* benchmarks (bench_inline_test.go) are issue 16's: the scope
# written inline in every call, a model with a has-many field and a time
# column, SQLite in memory, each hit against the floor (GORM building the
# statement plus a msgpack decode of the answer) and the uncached query of
# the same run. Their targets: a First hit <= 1.2x the floor and >= 3.5x
# faster than uncached, with at most 4 allocations more than the floor; a
# Find of 25 >= 10x faster than uncached; the First hit after 100,000
# distinct SQL texts within 10% of the hit. Two more ratios split the
# latter: "after / beside" compares it with the first plugin's hit measured
# while the churned plugin's 100,000 answers are alive (the same heap), so
# it is what the churned plugin's full caches cost; "beside / hit" is what
# the larger heap costs any hit (the collector marks it). after-vs-beside
# measures the two alternately, in rounds of 100 hits, and reports their
# ratio as a metric of its own (after/beside): the one least hit by noise.
# Likewise InlineFirst/interleaved and InlineFind25/interleaved run the
# uncached query, the floor and the hit alternately, in rounds, and report
# hit/floor and uncached/hit: the targets are printed for both ways of
# measuring.
#
# BASE=<commit> compares a change with the commit it started from: the
# test binary of BASE is built too (in a temporary git worktree), the two
# binaries run alternately, base then current, RUNS times each, so that
# machine noise hits both, and the report is printed for each.
#
# Usage: scripts/bench-plugin.sh [bench regexp]
#        (RUNS=N to change the runs, BASE=<commit> to compare with a commit)
# Run it on a quiet machine, never alongside other benchmarks.
set -euo pipefail

cd "$(dirname "$0")/.."
pattern=${1:-'Inline|FirstByPK|Find25|RcPreload'}
runs=${RUNS:-8}
base=${BASE:-}

dir=$(mktemp -d)
cleanup() {
	if [ -n "$base" ] && [ -d "$dir/base" ]; then git worktree remove --force "$dir/base" >/dev/null 2>&1 || true; fi
	rm -rf "$dir"
}
trap cleanup EXIT
go test -c -o "$dir/dogpile.test" .
if [ -n "$base" ]; then
	git worktree add --detach "$dir/base" "$base" >/dev/null
	(cd "$dir/base" && go test -c -o "$dir/dogpile-base.test" .)
fi

# bench binary output: one run of the benchmarks by binary, appended to
# output (and shown as it goes, each line led by the binary's name).
bench() {
	echo "run $i" >>"$2"
	(cd "$dir" && "./$1" -test.run '^$' -test.bench "$pattern" -test.benchmem) | grep '^Benchmark' | tee -a "$2" | sed "s/^/$1 /"
}
for i in $(seq "$runs"); do
	if [ -n "$base" ]; then bench dogpile-base.test "$dir/out.base"; fi
	bench dogpile.test "$dir/out"
done

# report output: the medians and ratios of the runs in output.
report() { awk "$report_awk" "$1"; }
report_awk=$(
	cat <<'AWK'
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
# which side of the target passes; "info" pairs have no target. Kind
# "allocs" compares allocs/op instead of ns/op: those of the numerator minus
# those of the denominator, at most target. Kind "metric" takes the
# numerator benchmark's own metric whose unit is the denominator, at most
# target; "metricmin" at least target; "metricinfo" without one.
function pair(label, num, den, target, kind) {
	labels[++npairs] = label; nums[npairs] = num; dens[npairs] = den
	targets[npairs] = target; kinds[npairs] = kind
}
BEGIN {
	pair("InlineFirst    hit / floor", "InlineFirst/hit", "InlineFirst/floor", 1.2, "max")
	pair("InlineFirst    uncached / hit", "InlineFirst/uncached", "InlineFirst/hit", 3.5, "min")
	pair("InlineFirst    hit allocs - floor allocs", "InlineFirst/hit", "InlineFirst/floor", 4, "allocs")
	pair("InlineFirst    hit after 100k SQL texts / hit", "InlineFirst/hit-after-100k-sql", "InlineFirst/hit", 1.1, "max")
	pair("InlineFirst    hit after 100k SQL / hit beside", "InlineFirst/hit-after-100k-sql", "InlineFirst/hit-beside-100k-sql", 0, "info")
	pair("InlineFirst    after/beside, interleaved", "InlineFirst/after-vs-beside", "after/beside", 1.1, "metric")
	pair("InlineFirst    hit beside 100k SQL / hit", "InlineFirst/hit-beside-100k-sql", "InlineFirst/hit", 0, "info")
	pair("InlineFirst    hit / floor, interleaved", "InlineFirst/interleaved", "hit/floor", 1.2, "metric")
	pair("InlineFirst    uncached / hit, interleaved", "InlineFirst/interleaved", "uncached/hit", 3.5, "metricmin")
	pair("InlineFind25   uncached / hit", "InlineFind25/uncached", "InlineFind25/hit", 10, "min")
	pair("InlineFind25   uncached / hit, interleaved", "InlineFind25/interleaved", "uncached/hit", 10, "metricmin")
	pair("InlineFind25   hit / floor, interleaved", "InlineFind25/interleaved", "hit/floor", 0, "metricinfo")
	pair("InlineFind25   hit / floor", "InlineFind25/hit", "InlineFind25/floor", 0, "info")
	pair("InlineCount    uncached / hit", "InlineCount/uncached", "InlineCount/hit", 0, "info")
	pair("InlineCount    hit / floor", "InlineCount/hit", "InlineCount/floor", 0, "info")
	pair("InlinePreload100 uncached / hit", "InlinePreload100/uncached", "InlinePreload100/hit", 0, "info")
	pair("InlinePreload100 hit / floor", "InlinePreload100/hit", "InlinePreload100/floor", 0, "info")
	pair("FirstByPK  uncached / hit", "FirstByPK/uncached", "FirstByPK/fromcache-hit", 3, "min")
	pair("FirstByPK  hit / floor", "FirstByPK/fromcache-hit", "FirstByPK/floor-build-and-decode", 1.3, "max")
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
	for (i = 5; i < NF; i++) if ($(i + 1) == "allocs/op") { allocs[name] = allocs[name] " " $i; allocat[name, run] = $i }
	for (i = 3; i < NF; i++) if ($(i + 1) !~ /^(ns|B|allocs)\/op$/ && $i ~ /^[0-9.]+$/) metricat[name, $(i + 1), run] = $i
}
END {
	if (count == 0) { print "no benchmark results" > "/dev/stderr"; exit 1 }
	printf "%-48s %12s %10s\n", "benchmark (median of runs)", "ns/op", "allocs/op"
	for (i = 1; i <= count; i++) printf "%-48s %12.0f %10s\n", order[i], median(all[order[i]]), median(allocs[order[i]])
	print ""
	printf "%-48s %8s %8s   %s\n", "ratio (median of per-run ratios)", "ratio", "target", "per run"
	for (p = 1; p <= npairs; p++) {
		list = ""
		for (r = 1; r <= run; r++) {
			if (kinds[p] ~ /^metric/) {
				if ((nums[p], dens[p], r) in metricat)
					list = list " " sprintf("%.2f", metricat[nums[p], dens[p], r])
				continue
			}
			if (kinds[p] == "allocs") {
				if ((nums[p], r) in allocat && (dens[p], r) in allocat)
					list = list " " sprintf("%d", allocat[nums[p], r] - allocat[dens[p], r])
				continue
			}
			if ((nums[p], r) in at && (dens[p], r) in at && at[dens[p], r] > 0)
				list = list " " sprintf("%.2f", at[nums[p], r] / at[dens[p], r])
		}
		if (list == "") continue
		m = median(list)
		if (kinds[p] == "info" || kinds[p] == "metricinfo") {
			printf "%-48s %8.2f %9s  %s\n", labels[p], m, "-", list
			continue
		}
		atleast = kinds[p] == "min" || kinds[p] == "metricmin" # else at most
		ok = atleast ? (m >= targets[p]) : (m <= targets[p])
		printf "%-48s %8.2f %7s%s  %s%s\n", labels[p], m, (atleast ? ">=" : "<="), targets[p], list, (ok ? "" : "   (target missed)")
	}
}
AWK
)

if [ -n "$base" ]; then
	echo
	echo "== BASE $base ($(git rev-parse --short "$base"))"
	echo
	report "$dir/out.base"
	echo
	echo "== CURRENT (working tree of $(git rev-parse --short HEAD))"
fi
echo
report "$dir/out"
