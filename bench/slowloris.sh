#!/usr/bin/env bash
# Normal traffic's latency through a proxy listener with and without a
# slow-loris attack, side by side in one run (issue 12): BenchmarkSlowLoris
# (internal/proxy/dataplane/overload_bench_test.go) sends keep-alive
# HTTP/1.1 requests from 4 clients, each on its own connection opened
# before the attack, through an in-process data plane to a real upstream,
# all on loopback, in three scenarios:
#
#   quiet                             no attack
#   attack-1000-held                  1,000 slow-loris connections (a
#                                     header line every 100 ms, never the
#                                     end of the head; re-dialled 100 ms
#                                     after the proxy closes one), default
#                                     limits: request_headers_timeout 10 s,
#                                     no connection limit — all are held
#   attack-1000-max-connections-256   the same attack, --max-connections
#                                     256: the rest are closed at once
#   attack-h2-idle-1000               1,000 slow HTTP/2 (h2c) connections:
#                                     the preface and SETTINGS, then a
#                                     PING every 100 ms, never a HEADERS
#                                     frame; default limits
#   attack-h2-headers-1000            1,000 slow HTTP/2 connections: a
#                                     HEADERS frame without END_HEADERS,
#                                     then a CONTINUATION frame every
#                                     100 ms; default limits. Both HTTP/2
#                                     kinds are closed by
#                                     request_headers_timeout (10 s) and
#                                     dialled again
#
# ROUNDS rounds, the scenarios interleaved (one run of each per round), so
# the machine's noise shows. Reported per run: latency p50/p99/max (µs),
# failed normal requests, the normal clients' dials, the attack
# connections the proxy held at the end, those it shed and the HTTP/2
# ones it closed for their late headers. No number is asserted anywhere;
# this only measures.
#
#   bench/slowloris.sh                 # 3 rounds of 4000 requests
#   QUICK=1 bench/slowloris.sh         # 1 round of 1000: a smoke test
#   ROUNDS=5 REQUESTS=8000 bench/slowloris.sh
#   SCENARIOS='(quiet|attack-h2.*)' bench/slowloris.sh   # some of them
#
# Writes bench/results/slowloris.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${QUICK:-0}" = 1 ]; then ROUNDS=${ROUNDS:-1}; REQUESTS=${REQUESTS:-1000}; fi
ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-4000}
out=bench/results/slowloris.md
raw=$(mktemp /tmp/weft-slowloris.XXXXXX)
trap 'rm -f "$raw" "$raw.test"' EXIT

before=$(uptime)
go test -c -o "$raw.test" ./internal/proxy/dataplane
for ((r = 1; r <= ROUNDS; r++)); do
	"$raw.test" -test.run '^$' -test.bench "BenchmarkSlowLoris${SCENARIOS:+/$SCENARIOS}" -test.benchtime "${REQUESTS}x" | grep '^BenchmarkSlowLoris/' | sed "s/^/round $r /" | tee -a "$raw"
done
after=$(uptime)

{
	echo "# Normal traffic under a slow-loris attack"
	echo
	echo "bench/slowloris.sh: $ROUNDS rounds of $REQUESTS keep-alive HTTP/1.1 requests from 4 clients through one listener of an in-process data plane to a real upstream on loopback; scenarios interleaved in each round. $(nproc) CPUs."
	echo
	echo "- load before: \`$before\`"
	echo "- load after: \`$after\`"
	echo
	echo "| scenario | round | p50 µs | p99 µs | max µs | failed | client dials | attack held | attack shed | HTTP/2 closed for late headers |"
	echo "|---|---|---|---|---|---|---|---|---|---|"
	sort -s -k3,3 "$raw" | awk '{
		name = $3; sub(/^BenchmarkSlowLoris\//, "", name); sub(/-[0-9]+$/, "", name)
		delete v
		for (i = 5; i < NF; i += 2) v[$(i+1)] = $i
		printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", name, $2, v["p50-µs"], v["p99-µs"], v["max-µs"], v["failed"], v["client-dials"], v["attack-held"], v["attack-shed"], v["h2-timed-out"]
	}'
} >"$out"
echo "wrote $out"
