#!/usr/bin/env bash
# Issue 11's benchmark (docs/search.md, "Running on a cluster"): trial claims per second and the
# quick-start study's end-to-end time with 1, 2, 4, 8 workers, on SQLite and on PostgreSQL, on
# this one machine. Starts its own PostgreSQL (scripts/services.sh). Release build.
#   scripts/bench_store.sh [workers…]      default: 1 2 4 8
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("$@")
[ $# -eq 0 ] && counts=(1 2 4 8)
swift build -c release >/dev/null
bin=.build/release/topiary
export TOPIARY_SERVICES="${TOPIARY_SERVICES:-$(mktemp -d /tmp/topiary-bench.XXXXXX)}"
chmod 755 "$TOPIARY_SERVICES"
trap './scripts/services.sh stop; rm -rf "$TOPIARY_SERVICES"' EXIT
./scripts/services.sh start >/dev/null
source "$TOPIARY_SERVICES/env"
lscpu | grep -E "Model name|^CPU\(s\)"
work="$TOPIARY_SERVICES/work"; mkdir -p "$work"
echo "== claims (2000 trials, 24 metric values each)"
$bin bench store --db "$work/claims.sqlite" --trials 2000 --workers "${counts[@]}"
$bin bench store --db "$TOPIARY_TEST_POSTGRES" --trials 2000 --workers "${counts[@]}"
echo "== the quick-start study end to end (importance cached), search run --workers N"
[ -f data/fortunes/manifest.json ] || { echo "data/fortunes missing: run scripts/quickstart.sh once" >&2; exit 1; }
for n in "${counts[@]}"; do
  for store in sqlite postgresql; do
    if [ $store = sqlite ]; then db="$work/e2e-$n.sqlite"; else
      createdb -h 127.0.0.1 -p "${TOPIARY_PG_PORT:-55432}" -U topiary "e2e_$n"
      db="postgresql://topiary@127.0.0.1:${TOPIARY_PG_PORT:-55432}/e2e_$n"
    fi
    start=$(date +%s.%N)
    line=$($bin search run experiments/quickstart.json --db "$db" --workers "$n" --artifacts "$work/artifacts-$store-$n" \
             --importance-cache results/importance 2>/dev/null | grep -E "^study quickstart done")
    winner=$($bin results top quickstart --db "$db" --limit 1 --format csv | tail -1 | cut -d, -f2,6)
    printf "%-10s %d worker(s): %.1f s wall  [%s]  winner %s\n" $store "$n" "$(echo "$(date +%s.%N) - $start" | bc)" "$line" "$winner"
  done
done
