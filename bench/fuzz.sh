#!/usr/bin/env bash
# Runs every Go fuzz target of the repository (func Fuzz* in *_test.go) as a
# fuzzer, one after the other, for FUZZTIME each, and reports what each
# did. Not part of CI: `go test ./...` already runs every target's seeds and
# every crasher kept under testdata/fuzz/<Target>/ as ordinary tests.
#
#   bench/fuzz.sh                        # every target, 2m each
#   FUZZTIME=10m bench/fuzz.sh           # longer
#   TARGETS='FuzzLoad|FuzzGuard' bench/fuzz.sh
#   WEFT_FUZZ_SEEDS=~/istio/samples bench/fuzz.sh   # more YAML seeds for the config targets
#
# A crasher is written by `go test` to <package>/testdata/fuzz/<Target>/<id>:
# fix the bug, keep the file (it is the regression test), and commit both.
# The corpus grown while fuzzing stays in Go's cache ($(go env GOCACHE)/fuzz),
# so later runs continue where earlier ones stopped.
#
# Writes bench/results/fuzz.md. Exits non-zero if any target failed.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-2m}
# Go minimizes every new interesting input as well as crashers; on a small
# machine that took most of a short run at 10 s each. A crasher is
# minimized for this long too: rerun its target with MINIMIZE=60s if the
# kept input is still large.
MINIMIZE=${MINIMIZE:-2s}
# One worker per target: the machines this runs on are small and shared.
PARALLEL=${PARALLEL:-1}
TARGETS=${TARGETS:-.}
OUT=${OUT:-bench/results/fuzz.md}

work=$(mktemp -d /tmp/weft-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT

# package directory and target name, one pair a line
grep -rlE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' . | sort | while read -r file; do
	grep -oE '^func Fuzz[A-Za-z0-9_]*' "$file" | sed 's/^func //' | while read -r target; do
		echo "$(dirname "$file") $target"
	done
done | grep -E " ($TARGETS)\$" > "$work/targets" || true
[ -s "$work/targets" ] || { echo "no fuzz target matches TARGETS=$TARGETS" >&2; exit 1; }

{
	echo "# Fuzzing ($(date -u +%Y-%m-%dT%H:%MZ), $FUZZTIME per target, $PARALLEL worker, $(go env GOVERSION))"
	echo
	echo "| package | target | result | executions | new interesting inputs | corpus |"
	echo "|---|---|---|---|---|---|"
} > "$work/report"

failed=0
while read -r dir target; do
	log="$work/$target.log"
	echo "== $dir $target ($FUZZTIME)"
	status=ok
	if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$MINIMIZE" \
		-parallel "$PARALLEL" "$dir" > "$log" 2>&1; then
		status=FAILED
		failed=1
	fi
	last=$(grep -E '^fuzz: elapsed' "$log" | tail -1 || true)
	execs=$(sed -nE 's/.*execs: ([0-9]+).*/\1/p' <<<"$last")
	interesting=$(sed -nE 's/.*new interesting: ([0-9]+).*/\1/p' <<<"$last")
	corpus=$(sed -nE 's/.*\(total: ([0-9]+)\).*/\1/p' <<<"$last")
	if [ "$status" = FAILED ]; then
		grep -vE '^fuzz: elapsed' "$log" | head -40
		crasher=$(sed -nE 's/.*Failing input written to (.*)/\1/p' "$log" | head -1)
		[ -n "$crasher" ] && status="FAILED: $dir/$crasher"
	fi
	echo "   $status; ${execs:-?} executions, ${interesting:-?} new interesting inputs"
	echo "| \`${dir#./}\` | \`$target\` | $status | ${execs:-?} | ${interesting:-?} | ${corpus:-?} |" >> "$work/report"
done < "$work/targets"

mkdir -p "$(dirname "$OUT")"
cp "$work/report" "$OUT"
echo
cat "$OUT"
exit $failed
