#!/usr/bin/env bash
# bench-write.sh - what the plugin adds to a write (issue 12): each write
# case without the plugin, with a memory region and with a Redis region, on
# PostgreSQL, measured side by side in the same runs.
#
# Builds the root package's test binary once, runs BenchmarkWrites
# (bench_write_test.go) RUNS times (default 3; each run is one process, so
# machine noise hits both sides of a ratio alike; the order of the modes is
# rotated from run to run), computes the ratios memory / no-plugin and
# redis / no-plugin within each run, and prints the median of each
# benchmark's ns/op, queries/op (statements reaching
# PostgreSQL), redis-cmds/op and redis-rtts/op (commands and round trips the
# Redis region sent per commit), and the median of each ratio against the
# issue's targets: memory <= 1.05x no plugin, Redis <= 1.3x no plugin and
# <= 2 round trips per commit. Missed targets are marked; nothing is
# asserted (timings depend on the machine).
#
# PostgreSQL and redis-server come from the test harness; its PostgreSQL
# runs here with the durable defaults (fsync, synchronous_commit and
# full_page_writes on: DOGPILE_PG_DURABLE=1, set unless given; 0 measures
# the tests' fsync-off server). The settings are printed. To measure on
# another server, set DOGPILE_BENCH_PG to a keyword/value DSN of a user that
# may create databases there (see bench_write_test.go).
#
# Usage: scripts/bench-write.sh [bench regexp]
#        (RUNS=N to change the runs, BENCHTIME=2s or 500x for -test.benchtime)
# Run it on a quiet machine, never alongside other benchmarks.
set -euo pipefail

cd "$(dirname "$0")/.."
pattern=${1:-'^BenchmarkWrites$'}
runs=${RUNS:-3}
benchtime=()
if [ -n "${BENCHTIME:-}" ]; then
	benchtime=(-test.benchtime "$BENCHTIME")
fi

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"${GO:-go}" test -c -o "$dir/dogpile.test" .
echo "load before: $(uptime)"
for i in $(seq "$runs"); do
	echo "run $i" >>"$dir/out"
	# The modes run in an order rotated from run to run (no-plugin first,
	# then memory first, then redis first, ...).
	(cd "$dir" && DOGPILE_PG_DURABLE=${DOGPILE_PG_DURABLE:-1} DOGPILE_BENCH_WRITE_ROTATE=$((i - 1)) ./dogpile.test -test.run '^$' -test.bench "$pattern" -test.benchmem "${benchtime[@]}") >"$dir/run$i"
	grep '^Benchmark' "$dir/run$i" | tee -a "$dir/out"
	# The logged server settings and command lists, kept from the last run.
	grep -E 'postgres: server_version|redis commands of one commit|backend errors|^--- BENCH' "$dir/run$i" >"$dir/logs" || true
done
echo "load after:  $(uptime)"

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
function cell(name, unit,    m) {
	if (!((name, unit) in all)) return sprintf("%13s", "-")
	m = median(all[name, unit])
	return (unit == "ns/op" || unit == "allocs/op") ? sprintf("%13.0f", m) : sprintf("%13.2f", m)
}
BEGIN {
	ncases = split("update-one tx-three-writes update-where-100", cases, " ")
	nmodes = split("no-plugin memory redis", modes, " ")
	units = "ns/op queries/op redis-cmds/op redis-rtts/op allocs/op"
	nunits = split(units, unitlist, " ")
}
# First file: the log lines of the last run.
FILENAME == ARGV[1] {
	if ($1 == "---" && $2 == "BENCH:") { bench = $3; sub(/^BenchmarkWrites\//, "", bench); sub(/-[0-9]+$/, "", bench); next }
	line = $0
	sub(/^[ \t]*[^ ]+:[0-9]+: /, "", line)
	if (line ~ /^postgres: /) settings = line
	else if (line ~ /^redis commands of one commit: /) { sub(/^redis commands of one commit: /, "", line); sequence[bench] = line }
	else if (line ~ /backend errors/) warnings = warnings "  " bench ": " line "\n"
	next
}
/^run / { run = $2; next }
/^Benchmark/ {
	name = $1
	sub(/^BenchmarkWrites\//, "", name)
	sub(/-[0-9]+$/, "", name)
	if (!(name in seen)) { seen[name] = 1; count++ }
	for (i = 3; i < NF; i += 2) {
		all[name, $(i + 1)] = all[name, $(i + 1)] " " $i
		at[name, $(i + 1), run] = $i
	}
}
END {
	if (count == 0) { print "no benchmark results" > "/dev/stderr"; exit 1 }
	if (settings != "") print settings
	print ""
	printf "%-30s", "benchmark (median of " run " runs)"
	for (u = 1; u <= nunits; u++) printf " %13s", unitlist[u]
	print ""
	for (c = 1; c <= ncases; c++)
		for (m = 1; m <= nmodes; m++) {
			name = cases[c] "/" modes[m]
			if (!(name in seen)) continue
			printf "%-30s", name
			for (u = 1; u <= nunits; u++) printf " %s", cell(name, unitlist[u])
			print ""
		}
	print ""
	printf "%-38s %7s %8s   %s\n", "ratio (median of per-run ratios)", "ratio", "target", "per run"
	for (c = 1; c <= ncases; c++) {
		base = cases[c] "/no-plugin"
		for (m = 1; m <= 2; m++) {
			mode = (m == 1) ? "memory" : "redis"
			target = (m == 1) ? 1.05 : 1.3
			num = cases[c] "/" mode
			list = ""
			for (r = 1; r <= run; r++)
				if ((num, "ns/op", r) in at && (base, "ns/op", r) in at && at[base, "ns/op", r] > 0)
					list = list " " sprintf("%.2f", at[num, "ns/op", r] / at[base, "ns/op", r])
			if (list == "") continue
			v = median(list)
			printf "%-38s %7.2f %6s%s  %s%s\n", cases[c] "  " mode " / no plugin", v, "<=", target, list, (v <= target ? "" : "   (target missed)")
		}
	}
	print ""
	printf "%-38s %7s %8s   %s\n", "Redis per commit (median of runs)", "rtts", "target", "commands"
	for (c = 1; c <= ncases; c++) {
		name = cases[c] "/redis"
		if (!((name, "redis-rtts/op") in all)) continue
		v = median(all[name, "redis-rtts/op"])
		printf "%-38s %7.2f %6s%s  %.2f%s\n", cases[c], v, "<=", 2, median(all[name, "redis-cmds/op"]), (v <= 2 ? "" : "   (target missed)")
	}
	printed = 0
	for (c = 1; c <= ncases; c++) {
		name = cases[c] "/redis"
		if (!(name in sequence)) continue
		if (!printed++) { print ""; print "Redis commands of one commit (last run, in order sent):" }
		print "  " cases[c] ": " sequence[name]
	}
	if (warnings != "") { print ""; print "warnings (last run):"; printf "%s", warnings }
}' "$dir/logs" "$dir/out"
