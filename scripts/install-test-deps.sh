#!/usr/bin/env bash
# install-test-deps.sh - make sure the servers used by internal/testharness
# are installed: redis-server, redis-cli, PostgreSQL (initdb + postgres) and
# memcached.
#
# Debian bookworm packages: redis-server, redis-tools, postgresql, memcached.
#
# Behaviour:
#   * Everything present      -> prints nothing, exits 0 (idempotent).
#   * Missing and running as root -> one `apt-get update`, then
#     `apt-get install -y --no-install-recommends` of the missing packages.
#   * Missing and not root    -> explains what is missing, exits 1.
#
# PostgreSQL is looked for in /usr/lib/postgresql/<ver>/bin (Debian's
# layout, preferred, newest version first) and then in PATH.
set -euo pipefail

# find_pg_bindir prints the first directory holding both initdb and postgres.
find_pg_bindir() {
	local dir
	# Newest Debian version first (sort -V on the version directory).
	while IFS= read -r dir; do
		if [[ -x "$dir/initdb" && -x "$dir/postgres" ]]; then
			printf '%s\n' "$dir"
			return 0
		fi
	done < <(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV)
	local initdb postgres
	initdb=$(command -v initdb 2>/dev/null || true)
	postgres=$(command -v postgres 2>/dev/null || true)
	if [[ -n "$initdb" && -n "$postgres" ]]; then
		dirname "$(readlink -f "$postgres")"
		return 0
	fi
	return 1
}

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
find_pg_bindir >/dev/null || missing+=(postgresql)
command -v memcached >/dev/null 2>&1 || missing+=(memcached)

if ((${#missing[@]} == 0)); then
	exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
	echo "install-test-deps: missing Debian package(s): ${missing[*]}" >&2
	echo "install-test-deps: run as root, or: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-test-deps: installing ${missing[*]}" >&2
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

# Verify the result so a broken install fails loudly here, not in tests.
command -v redis-server >/dev/null 2>&1 || { echo "install-test-deps: redis-server still missing" >&2; exit 1; }
command -v redis-cli >/dev/null 2>&1 || { echo "install-test-deps: redis-cli still missing" >&2; exit 1; }
find_pg_bindir >/dev/null || { echo "install-test-deps: PostgreSQL initdb/postgres still missing" >&2; exit 1; }
command -v memcached >/dev/null 2>&1 || { echo "install-test-deps: memcached still missing" >&2; exit 1; }
echo "install-test-deps: done" >&2
