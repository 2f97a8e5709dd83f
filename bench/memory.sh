#!/usr/bin/env bash
# Memory of one weft-proxy sidecar, side by side with nginx (one hop, one
# worker) in one run: idle, under a constant 1,000 requests/s (fortio, 16
# HTTP/1.1 keep-alive connections, 1 KiB bodies from `weft echo`), and a
# sidecar that holds a generated 1,000-service mesh (bench/meshgen, the
# xDS simulator's mesh writer), idle and under the same load.
#
# From /proc/PID/smaps_rollup: RSS, anonymous (private: heap, stacks, Go's
# runtime) and file-backed (RSS - anonymous: the binary's pages, shared
# by every process of the same file); the highest RSS of the samples taken
# once a second is reported. From the proxy's /stats/prometheus (Go's
# runtime): heap in use, heap objects, goroutine stacks, goroutines. The
# runtime's go_memstats_* (go-<state>.txt) and /proc/PID/smaps
# (smaps-<state>.txt) of each Weft state, and (with
# HEAP_PROFILES=1) heap profiles of both sidecars taken after all samples,
# are kept beside the table.
#
#   bench/memory.sh                          # 20 s of load per scenario
#   DURATION=60s SERVICES=2000 bench/memory.sh
#   PROXY_BIN=/tmp/weft-proxy.old bench/memory.sh   # measure another build
#   PROXY_ENV=GOGC=50 bench/memory.sh         # the sidecars' environment
#   PROXY_ARGS=--gc-headroom=4Mi bench/memory.sh   # more flags for both sidecars
#   SHARED_BINARY=1 bench/memory.sh           # both sidecars from one file (see below)
#   HEAP_PROFILES=1 bench/memory.sh           # sidecars with --heap-profiler, and
#                                             # their heap profiles (the profiler's
#                                             # records are then in the numbers)
#
# Builds weft-proxy as docs/proxy.md does (CGO, TAGS, LDFLAGS: a static
# binary; CGO=1 links it against the C library as a plain go build on a
# machine with a C compiler does). Needs fortio (go
# install fortio.org/fortio@v1.63.0) and nginx (apt-get install
# nginx-light). Writes $OUT/memory.md (default bench/results/memory).
# Everything runs on 127.0.21.0/24 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-20s}
QPS=${QPS:-1000}
CONNS=${CONNS:-16}
# fortio's histogram: the lowest buckets are RESOLUTION seconds wide (its
# default, 1 ms, puts every sub-millisecond answer in one bucket and reads
# a p99 between 1 and 3 ms to the nearest bucket). 10 µs: buckets of 0.1 ms
# up to 1 ms, 0.2 ms up to 2 ms, 0.5 ms up to 5 ms.
RESOLUTION=${RESOLUTION:-0.00001}
SERVICES=${SERVICES:-1000}
OUT=${OUT:-bench/results/memory}
TAGS=${TAGS-grpcnotrace}
CGO=${CGO:-0}
LDFLAGS=${LDFLAGS-"-s -w"}
FORTIO=${FORTIO:-$(command -v fortio || echo "$HOME/go/bin/fortio")}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
[ -x "$FORTIO" ] || { echo "fortio not found: go install fortio.org/fortio@v1.63.0" >&2; exit 1; }
[ -x "$NGINX" ] || { echo "nginx not found: apt-get install -y nginx-light" >&2; exit 1; }

work=$(mktemp -d /tmp/weft-memory.XXXXXX)
pids=()
cleanup() { for ((i=${#pids[@]}-1; i>=0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$OUT"

echo "building weft (and weft-proxy: CGO_ENABLED=$CGO -trimpath -tags '$TAGS' -ldflags '$LDFLAGS')"
go build -o "$work/weft" ./cmd/weft
if [ -n "${PROXY_BIN:-}" ]; then
  cp "$PROXY_BIN" "$work/weft-proxy"
else
  CGO_ENABLED=$CGO go build -trimpath -tags "$TAGS" -ldflags "$LDFLAGS" -o "$work/weft-proxy" ./cmd/weft-proxy
fi
# Written back to disk, as an installed binary is: the proxy pages out
# its start-up-only pages once its first config is applied, and the
# kernel cannot reclaim pages of a file that are still dirty from cp.
sync "$work/weft-proxy"
binsize=$(stat -c %s "$work/weft-proxy")
# Each sidecar runs from its own copy of the file, as one sidecar alone
# on a node does: pages of one file that another process maps stay in
# the page cache, and a page fault maps the cached pages around it too,
# so two sidecars of one file each count much of what the other touched
# (10-11 MiB of binary pages under load instead of 5.5-8.5, depending on
# which released its start-up pages first). SHARED_BINARY=1 runs both
# from one file, as several sidecars of one image on a node do.
mesh_bin="$work/weft-proxy"
if [ "${SHARED_BINARY:-0}" != 1 ]; then
  mesh_bin="$work/weft-proxy-mesh"
  cp "$work/weft-proxy" "$mesh_bin"
  sync "$mesh_bin"
fi

CP1=127.0.21.9 CP2=127.0.21.10
APP=127.0.21.1 SMALL=127.0.21.2 MESH=127.0.21.3 NGINXIP=127.0.21.4

# bench_config DIR IP NAME: a service whose one endpoint is a sidecar at IP.
bench_config() {
  mkdir -p "$1"
  cat > "$1/bench.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: bench, namespace: default}
spec:
  hosts: [bench.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: bench}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: $3, namespace: default}
spec:
  address: $2
  ports: {http: 8080}
  labels: {app: bench, version: v1}
YAML
}
# Two control planes: one with the bench service only, one with it and a
# generated mesh of $SERVICES services (every sidecar sees every service).
bench_config "$work/small" $SMALL bench-small
bench_config "$work/mesh" $MESH bench-mesh
go run ./bench/meshgen -dir "$work/mesh" -services "$SERVICES" -endpoints 1 -spare 1

"$work/weft" serve --config "$work/small" --xds-address $CP1:15012 --xds-plaintext-address $CP1:15010 --status-address $CP1:15014 --log-level error & pids+=($!)
"$work/weft" serve --config "$work/mesh" --xds-address $CP2:15012 --xds-plaintext-address $CP2:15010 --status-address $CP2:15014 --log-level error & pids+=($!)
"$work/weft" echo --name bench --address $APP:18080 --log-level warn & pids+=($!)
for i in $(seq 1 100); do
  curl -fs -o /dev/null http://$CP1:15014/status && curl -fs -o /dev/null http://$CP2:15014/status && break
  sleep 0.2
done

# The sidecars are started as docs/proxy.md shows; PROXY_ENV adds to their
# environment (GOGC, GOMEMLIMIT, GOMAXPROCS, …), PROXY_ARGS to their flags.
proxy_flags=()
if [ "${HEAP_PROFILES:-0}" = 1 ]; then proxy_flags=(--heap-profiler); fi
read -r -a extra_args <<< "${PROXY_ARGS:-}"
proxy_flags+=("${extra_args[@]}")
env ${PROXY_ENV:-} "$work/weft-proxy" --xds-plaintext --xds-address $CP1:15010 --workload bench-small --labels app=bench,version=v1 \
  --ip $SMALL --outbound "" --app-port 8080=$APP:18080 --admin-address $SMALL:15000 --log-level warn "${proxy_flags[@]}" & small_pid=$!; pids+=($!)
env ${PROXY_ENV:-} "$mesh_bin" --xds-plaintext --xds-address $CP2:15010 --workload bench-mesh --labels app=bench,version=v1 \
  --ip $MESH --outbound $MESH:15001 --app-port 8080=$APP:18080 --admin-address $MESH:15000 --log-level warn "${proxy_flags[@]}" & mesh_pid=$!; pids+=($!)

cat > "$work/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  upstream up { server $APP:18080; keepalive 64; }
  server {
    listen $NGINXIP:8080;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGX
"$NGINX" -c "$work/nginx.conf" -p "$work" >/dev/null 2>&1 & nginx_pid=$!; pids+=($!)

for i in $(seq 1 300); do
  if curl -fs -o /dev/null http://$SMALL:15000/ready && curl -fs -o /dev/null http://$MESH:15000/ready \
     && curl -fs -o /dev/null -H 'Host: bench' "http://$SMALL:8080/" && curl -fs -o /dev/null -H 'Host: bench' "http://$MESH:8080/" \
     && curl -fs -o /dev/null "http://$NGINXIP:8080/"; then break; fi
  sleep 0.2
  [ "$i" = 300 ] && { echo "sidecars did not come up" >&2; exit 1; }
done

# mem PID...: "rss anon file" in KiB, summed over the processes and their
# children (nginx's master and worker).
mem() {
  local p all=() r=0 a=0
  for p in "$@"; do all+=("$p"); all+=($(pgrep -P "$p" || true)); done
  for p in "${all[@]}"; do
    read -r pr pa < <(awk '/^Rss:/ {r=$2} /^Anonymous:/ {a=$2} END {print r, a}' "/proc/$p/smaps_rollup")
    r=$((r + pr)); a=$((a + pa))
  done
  echo "$r $a $((r - a))"
}
# gostats ADMIN: Go runtime numbers from the proxy's metrics, in KiB.
gostats() {
  curl -fsS "http://$1/stats/prometheus" | awk '
    /^go_memstats_heap_inuse_bytes / {h=$2} /^go_memstats_heap_alloc_bytes / {l=$2}
    /^go_memstats_stack_inuse_bytes / {s=$2} /^go_goroutines / {g=$2} /^go_memstats_sys_bytes / {y=$2}
    END {printf "%d %d %d %d %d", l/1024, h/1024, s/1024, g, y/1024}'
}
# ticks PID: CPU time of a process and its children, in clock ticks.
ticks() {
  local p t=0
  for p in "$1" $(pgrep -P "$1" || true); do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done
  echo $t
}
hz=$(getconf CLK_TCK)
# sample NAME SECONDS PID [ADMIN]: the sample with the highest RSS over
# SECONDS (one a second), then the Go runtime's numbers (a metrics scrape,
# as Prometheus does). Heap profiles are taken only after every sample
# (see the end): pprof's encoder and symbolisation fault in pages of the
# binary that a sidecar nobody profiles never touches.
sample() {
  local name=$1 secs=$2 pid=$3 admin=${4:-} best="0 0 0" m i
  for ((i = 0; i < secs; i++)); do
    m=$(mem "$pid")
    [ "${m%% *}" -gt "${best%% *}" ] && best=$m
    sleep 1
  done
  local g="- - - - -"
  if [ -n "$admin" ]; then
    g=$(gostats "$admin")
    # Where the runtime's memory is (heap idle and released, stacks, span
    # and GC metadata), to tell the anonymous RSS apart.
    local q="" f
    for f in heap_alloc heap_inuse heap_idle heap_released heap_sys stack_inuse stack_sys mspan_sys mcache_sys gc_sys other_sys buck_hash_sys sys next_gc; do
      q="$q&name[]=go_memstats_${f}_bytes"
    done
    curl -fsS "http://$admin/stats/prometheus?${q#&}&name[]=go_gc_duration_seconds&name[]=go_goroutines" | grep -v '^#' > "$OUT/go-$name.txt" || true
    # The process's mappings as the sample ended: which anonymous
    # mappings (the heap arena, the runtime's metadata) hold the RSS.
    cat "/proc/$pid/smaps" > "$OUT/smaps-$name.txt" 2>/dev/null || true
  fi
  echo "$name $best $g ${CPU_US:--}" >> "$work/rows"
}
# binpages PID: "resident referenced" KiB of the binary's own mappings
# (its code, read-only data and pclntab), Referenced counting the pages
# touched since the last clear_refs.
binpages() {
  awk -v bin="$work/weft-proxy" -v bin2="$mesh_bin" '/^[0-9a-f]+-[0-9a-f]+ / {on = ($NF == bin || $NF == bin2)} on && /^Rss:/ {r += $2} on && /^Referenced:/ {f += $2} END {print r+0, f+0}' "/proc/$1/smaps"
}
# load NAME URL PID [ADMIN]: sample while fortio sends QPS for DURATION;
# prints the load's rate, answers and p50/p99 (not in the table).
# For a sidecar, the pages of its binary that the load touches are
# counted too (clear_refs before, smaps' Referenced after: what of the
# resident binary serving requests needs, the rest was touched by init
# and configuration).
load() {
  local secs=${DURATION%s} t0
  t0=$(ticks "$3")
  [ -n "${4:-}" ] && echo 1 > "/proc/$3/clear_refs"
  "$FORTIO" load -quiet -r "$RESOLUTION" -qps "$QPS" -c "$CONNS" -t "$DURATION" -H "Host: bench" -json "$work/$1.json" "$2?size=1024" >/dev/null 2>&1 & local f=$!
  sleep 2
  CPU_US=- sample "$1" $((secs - 4)) "$3" "${4:-}"
  wait $f
  [ -n "${4:-}" ] && echo "$1 $(binpages "$3")" >> "$work/binpages"
  # CPU per request over the whole load, added to the row just written.
  local us
  us=$(awk -v d=$(( $(ticks "$3") - t0 )) -v hz="$hz" -v n="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["DurationHistogram"]["Count"])' "$work/$1.json")" 'BEGIN{printf "%.0f", 1e6*d/hz/n}')
  sed -i "\$s/ -\$/ $us/" "$work/rows"
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); h=d["DurationHistogram"]; p={q["Percentile"]: q["Value"]*1e3 for q in h.get("Percentiles", [])}; print("%s: %.0f rps, %d/%d 200s, p50 %.3f ms, p99 %.3f ms" % (sys.argv[2], d["ActualQPS"], d.get("RetCodes", {}).get("200", 0), h["Count"], p.get(50, float("nan")), p.get(99, float("nan"))))' "$work/$1.json" "$1"
}

: > "$work/rows"
: > "$work/binpages"
echo "idle (5 s each)"
sample nginx-idle 5 "$nginx_pid"
sample weft-idle 5 "$small_pid" $SMALL:15000
sample weft-mesh-idle 5 "$mesh_pid" $MESH:15000
echo "load: $DURATION each at $QPS rps over $CONNS connections"
load nginx-load "http://$NGINXIP:8080/" "$nginx_pid"
load weft-load "http://$SMALL:8080/" "$small_pid" $SMALL:15000
load weft-mesh-load "http://$MESH:8080/" "$mesh_pid" $MESH:15000
# Heap profiles of the sidecars as the load left them, after all samples.
if [ "${HEAP_PROFILES:-0}" = 1 ]; then
  curl -fsS -o "$OUT/heap-weft-load.pb.gz" "http://$SMALL:15000/debug/pprof/heap"
  curl -fsS -o "$OUT/heap-weft-mesh-load.pb.gz" "http://$MESH:15000/debug/pprof/heap"
fi
# Last: a config dump is large and its garbage would stay in the numbers.
clusters=$(curl -fsS http://$MESH:15000/config_dump | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["clusters"]), len(d["routes"]), len(d["endpoints"]))')
echo "mesh sidecar holds (clusters, route configs, load assignments): $clusters"

python3 - "$work/rows" "$DURATION" "$QPS" "$CONNS" "$SERVICES" "$binsize" "$clusters" "${PROXY_BIN:-CGO_ENABLED=$CGO go build -trimpath -tags '$TAGS' -ldflags '$LDFLAGS'}" "${PROXY_ENV:-}" "${PROXY_ARGS:-}" > "$OUT/memory.md" <<'PY'
import sys
rows = {l.split()[0]: l.split()[1:] for l in open(sys.argv[1])}
dur, qps, conns, services, binsize, clusters, build, env, args = sys.argv[2:11]
print(f"# weft-proxy memory: idle, {qps} rps ({conns} connections, 1 KiB, {dur}), {services}-service mesh\n")
print(f"weft-proxy: {int(binsize)/1e6:.1f} MB ({build}){', env ' + env if env else ''}{', flags ' + args if args else ''}; "
      f"the mesh sidecar holds {clusters.split()[0]} clusters, {clusters.split()[1]} route configurations, {clusters.split()[2]} load assignments.\n")
print("| process, state | RSS MiB | anonymous MiB | file-backed MiB | Go heap alloc MiB | heap in use MiB | stacks MiB | goroutines | Go sys MiB | CPU µs/request |")
print("|---|---|---|---|---|---|---|---|---|---|")
mib = lambda k: "-" if k == "-" else f"{int(k)/1024:.1f}"
for name in ["nginx-idle", "weft-idle", "weft-mesh-idle", "nginx-load", "weft-load", "weft-mesh-load"]:
    r = rows.get(name)
    if not r:
        continue
    print(f"| {name} | {mib(r[0])} | {mib(r[1])} | {mib(r[2])} | {mib(r[3])} | {mib(r[4])} | {mib(r[5])} | {r[6]} | {mib(r[7])} | {r[8]} |")
print()
def ratio(a, b, i, what):
    if a in rows and b in rows and int(rows[b][i]) > 0:
        print(f"{a} / {b}, {what}: {int(rows[a][i]) / int(rows[b][i]):.1f}x")
ratio("weft-load", "nginx-load", 0, "RSS")
ratio("weft-load", "nginx-load", 1, "anonymous")
ratio("weft-mesh-load", "nginx-load", 0, "RSS")
print()
import os
for l in open(os.path.join(os.path.dirname(sys.argv[1]), "binpages")):
    n, r, f = l.split()
    print(f"{n}: the binary's mappings {int(r)/1024:.1f} MiB resident, {int(f)/1024:.1f} MiB touched during the load")
PY
cat "$OUT/memory.md"
