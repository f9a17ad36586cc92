#!/usr/bin/env bash
# The project's one test command (README quick start; CI runs it too).
# It starts what the tests need, then runs vet, the race-enabled test suite,
# a few seconds of each fuzz target and a benchmark smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

# PostgreSQL and Redis for the multi-instance backend's tests; the machine
# normally runs them already, this starts them when it does not.
if command -v pg_ctlcluster >/dev/null 2>&1 && ! (echo > /dev/tcp/127.0.0.1/5432) 2>/dev/null; then
	pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || echo "warning: could not start PostgreSQL"
fi
if command -v redis-server >/dev/null 2>&1 && ! (echo > /dev/tcp/127.0.0.1/6379) 2>/dev/null; then
	redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || echo "warning: could not start Redis"
fi
# Wait for both to accept connections (a daemonized Redis returns at once),
# and create the tests' database when a fresh cluster lacks it.
for _ in $(seq 1 50); do
	(echo > /dev/tcp/127.0.0.1/5432) 2>/dev/null && (echo > /dev/tcp/127.0.0.1/6379) 2>/dev/null && break
	sleep 0.1
done
if command -v psql >/dev/null 2>&1 && (echo > /dev/tcp/127.0.0.1/5432) 2>/dev/null; then
	for u in postgres root; do
		if psql -h 127.0.0.1 -U "$u" -d postgres -Atc 'select 1' >/dev/null 2>&1; then
			psql -h 127.0.0.1 -U "$u" -d postgres -Atc "select 1 from pg_database where datname = 'test'" | grep -q 1 ||
				psql -h 127.0.0.1 -U "$u" -d postgres -c 'create database test' >/dev/null || echo "warning: could not create database test"
			break
		fi
	done
fi

echo "== gofmt"
unformatted=$(gofmt -l . | grep -v '^vendor/' || true)
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...

echo "== go test -race"
go test -race -count=1 -timeout 20m ./...

echo "== fuzz (a few seconds each)"
fuzztime="${FUZZTIME:-3s}"
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		echo "-- $pkg $target"
		go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" "$pkg"
	done
done

echo "== benchmarks (smoke: one short run each)"
go test -run='^$' -bench=. -benchtime=100x -benchmem ./... > /tmp/llmspend-bench.txt || { cat /tmp/llmspend-bench.txt; exit 1; }
grep -E '^(Benchmark|ok|FAIL)' /tmp/llmspend-bench.txt || true
