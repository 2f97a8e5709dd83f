#!/usr/bin/env bash
# A/B of two weft-proxy builds or settings on one inbound hop, with nginx
# beside them, interleaved in one run: on a shared or virtual machine the
# cost of a request drifts by ±20 % over minutes, so two runs of
# bench/run.sh cannot tell a 5 % change from the drift; rounds that
# alternate A, B and nginx within seconds can.
#
#   BIN_A=/tmp/old/weft-proxy BIN_B=/tmp/new/weft-proxy bench/ab.sh
#   ENV_A="WEFT_X=off" ENV_B="" bench/ab.sh      # one build, two settings
#   ARGS_A="--concurrency-min 2" bench/ab.sh     # or two sets of flags
#   ROUNDS=8 DURATION=8s QPS=1000 CONNS=16 PROTO=h1 bench/ab.sh
#   KEEP=/tmp/ab1 bench/ab.sh     # keep fortio's JSON (histograms) and the logs
#   CMD_B="/tmp/evproxy -listen {listen} -upstream {upstream}" bench/ab.sh
#                                 # another proxy as B (or A), HTTP/1.1 only:
#                                 # {listen} is its address, {upstream} the app's
#
# PROTO h1: fortio over HTTP/1.1 keep-alive; h2c: fortio -h2; each proxy
# forwards to `weft echo` (1 KiB bodies) over HTTP/1.1. PROTO grpc:
# fortio -grpc -ping (1 KiB payloads), h2c end to end to `fortio server`
# (nginx: grpc_pass). Prints, per
# contender, the median over rounds of the CPU per request (from /proc),
# the added p50 and p99 against the direct path of the same round, and
# the ratios B/A and each to nginx. Everything runs on 127.0.21.0/24 and
# stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-6}
DURATION=${DURATION:-8s}
QPS=${QPS:-1000}
CONNS=${CONNS:-16}
# fortio's histogram: the lowest buckets are RESOLUTION seconds wide (its
# default, 1 ms, puts every sub-millisecond answer in one bucket and reads
# a p99 between 1 and 3 ms to the nearest bucket). 10 µs: buckets of 0.1 ms
# up to 1 ms, 0.2 ms up to 2 ms, 0.5 ms up to 5 ms.
RESOLUTION=${RESOLUTION:-0.00001}
PROTO=${PROTO:-h1}
FORTIO=${FORTIO:-$(command -v fortio || echo "$HOME/go/bin/fortio")}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
[ -x "$FORTIO" ] || { echo "fortio not found: go install fortio.org/fortio@v1.63.0" >&2; exit 1; }
[ -x "$NGINX" ] || { echo "nginx not found: apt-get install -y nginx-light" >&2; exit 1; }

work=$(mktemp -d /tmp/weft-ab.XXXXXX)
pids=()
cleanup() {
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done; wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$work"/*.json "$work"/*.log "$KEEP"/ 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ -z "${BIN_A:-}" ] || [ -z "${BIN_B:-}" ]; then
  CGO_ENABLED=0 go build -trimpath -tags grpcnotrace -ldflags "-s -w" -o "$work/weft-proxy" ./cmd/weft-proxy
fi
BIN_A=${BIN_A:-$work/weft-proxy} BIN_B=${BIN_B:-$work/weft-proxy}
go build -o "$work/weft" ./cmd/weft

APP=127.0.21.5 A=127.0.21.2 B=127.0.21.3 NGX=127.0.21.4
mkdir -p "$work/config"
cat > "$work/config/ab.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ab, namespace: default}
spec:
  hosts: [ab.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}, {number: 8079, name: grpc, protocol: GRPC}]
  workloadSelector: {labels: {app: ab}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ab-a, namespace: default}
spec: {address: $A, ports: {http: 8080, grpc: 8079}, labels: {app: ab, version: a}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ab-b, namespace: default}
spec: {address: $B, ports: {http: 8080, grpc: 8079}, labels: {app: ab, version: b}}
YAML
"$work/weft" serve --config "$work/config" --xds-plaintext-address 127.0.21.9:15010 --xds-address 127.0.21.9:15012 --status-address 127.0.21.9:15014 --log-level warn & pids+=($!)
for _ in $(seq 1 50); do curl -fsS -o /dev/null http://127.0.21.9:15014/status 2>/dev/null && break; sleep 0.1; done
"$work/weft" echo --name ab --address $APP:18080 --log-level warn & pids+=($!)
"$FORTIO" server -quiet -grpc-port $APP:18079 -http-port $APP:18081 -redirect-port disabled >"$work/fortio-server.log" 2>&1 & pids+=($!)
# start_proxy BIN ENV IP VERSION ARGS: one sidecar, inbound 8080 → the echo app.
start_proxy() {
  # shellcheck disable=SC2086 # ENV and ARGS are word lists
  env $2 "$1" $5 --xds-plaintext --xds-address 127.0.21.9:15010 --workload "ab-$4" --labels "app=ab,version=$4" \
    --ip "$3" --outbound "" --app-port 8080=$APP:18080,8079=$APP:18079 --admin-address "$3:15000" --log-level warn >"$work/proxy-$4.log" 2>&1 &
  echo $!
}
# start_other CMD IP VERSION: CMD_A or CMD_B, a proxy that is not weft-proxy.
start_other() {
  local cmd=${1//\{listen\}/$2:8080}
  cmd=${cmd//\{upstream\}/$APP:18080}
  # shellcheck disable=SC2086 # a command line
  $cmd >"$work/proxy-$3.log" 2>&1 &
  echo $!
}
if [ -n "${CMD_A:-}${CMD_B:-}" ] && [ "$PROTO" != h1 ]; then echo "CMD_A/CMD_B: PROTO=h1 only" >&2; exit 2; fi
if [ -n "${CMD_A:-}" ]; then pa=$(start_other "$CMD_A" $A a); else pa=$(start_proxy "$BIN_A" "${ENV_A:-}" $A a "${ARGS_A:-}"); fi; pids+=("$pa")
if [ -n "${CMD_B:-}" ]; then pb=$(start_other "$CMD_B" $B b); else pb=$(start_proxy "$BIN_B" "${ENV_B:-}" $B b "${ARGS_B:-}"); fi; pids+=("$pb")
cat > "$work/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  upstream up { server $APP:18080; keepalive 64; }
  upstream grpcup { server $APP:18079; keepalive 64; }
  server {
    listen $NGX:8080 $( [ "$PROTO" = h2c ] && echo http2 );
    keepalive_requests 1000000;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  server {
    listen $NGX:8079 http2;
    keepalive_requests 1000000;
    location / { grpc_pass grpc://grpcup; }
  }
}
NGX
"$NGINX" -c "$work/nginx.conf" -p "$work" >/dev/null 2>&1 & pn=$!; pids+=("$pn")

ready() {
  if [ "$PROTO" = grpc ]; then
    "$FORTIO" load -quiet -grpc -ping -n 1 -c 1 -qps 0 -H "Host: ab.default.svc.cluster.local" "$1:8079" >/dev/null 2>&1
  else
    curl -fsS -o /dev/null -H "Host: ab.default.svc.cluster.local" "http://$1:8080/?size=1024" 2>/dev/null
  fi
}
for ip in $APP $A $B $NGX; do
  for _ in $(seq 1 100); do ready $ip && break; sleep 0.1; done
done

tree() { echo "$1"; for c in $(cat "/proc/$1/task/"*/children 2>/dev/null); do tree "$c"; done; }
cpu_ticks() { local t=0; for p in $(tree "$1"); do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }
hz=$(getconf CLK_TCK)
args=() port=8080 direct=$APP:18080 path="/?size=1024"
case $PROTO in
  h1) ;;
  h2c) args=(-h2) ;;
  grpc) args=(-grpc -ping -payload-size 1024) port=8079 direct=$APP:18079 path="" ;;
  *) echo "PROTO: h1, h2c or grpc" >&2; exit 2 ;;
esac

# one NAME IP [PID]: a fortio run; appends "round name cpu_ticks json".
one() {
  local t0=0 t1=0 url="http://$2$path"
  [ "$PROTO" = grpc ] && url=$2
  [ -n "${3:-}" ] && t0=$(cpu_ticks "$3")
  "$FORTIO" load -quiet -r "$RESOLUTION" -qps "$QPS" -c "$CONNS" -t "$DURATION" "${args[@]}" -H "Host: ab.default.svc.cluster.local" \
    -json "$work/$r-$1.json" "$url" >/dev/null 2>&1 || echo "$1: fortio failed" >&2
  [ -n "${3:-}" ] && t1=$(cpu_ticks "$3")
  echo "$r $1 $((t1 - t0)) $work/$r-$1.json" >> "$work/rows"
}
echo "A/B: $ROUNDS rounds × $DURATION, $PROTO at $QPS rps over $CONNS connections; A=${CMD_A:-$BIN_A ${ENV_A:-} ${ARGS_A:-}} B=${CMD_B:-$BIN_B ${ENV_B:-} ${ARGS_B:-}}" >&2
for r in $(seq 1 "$ROUNDS"); do
  # Rotate the order so no contender always follows the same one.
  case $((r % 3)) in
    0) order="a b nginx" ;; 1) order="b nginx a" ;; 2) order="nginx a b" ;;
  esac
  one direct "$direct"
  for c in $order; do
    case $c in a) one A $A:$port "$pa" ;; b) one B $B:$port "$pb" ;; nginx) one nginx $NGX:$port "$pn" ;; esac
  done
  echo "round $r done" >&2
done

python3 - "$work/rows" "$hz" <<'PY'
import json, statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
hz = int(sys.argv[2])
by = {}
bad = {}
for r, name, ticks, path in rows:
    d = json.load(open(path))
    h = d["DurationHistogram"]
    codes = d.get("RetCodes", {})
    ok = codes.get("200", 0) + codes.get("SERVING", 0)  # gRPC pings answer SERVING
    if ok != h["Count"]:
        bad[name] = bad.get(name, 0) + h["Count"] - ok
    p = {x["Percentile"]: x["Value"] * 1000 for x in h["Percentiles"]}
    by.setdefault(name, {})[r] = (1e6 * int(ticks) / hz / max(h["Count"], 1), p[50], p[99])
def med(name, i, added=False):
    vals = []
    for r, v in by[name].items():
        x = v[i]
        if added:
            x -= by["direct"][r][i]
        vals.append(x)
    return statistics.median(vals)
print("| contender | CPU µs/request | added p50 ms | added p99 ms | CPU vs nginx | CPU B/A |")
print("|---|---|---|---|---|---|")
for n in ("A", "B", "nginx"):
    cpu = med(n, 0)
    print(f"| {n} | {cpu:.1f} | {med(n, 1, True):+.3f} | {med(n, 2, True):+.3f} | {cpu / med('nginx', 0):.2f}× | {cpu / med('A', 0):.2f}× |")
pairs = sorted(by["A"])
ratios = [by["B"][r][0] / by["A"][r][0] for r in pairs if by["A"][r][0]]
if bad:
    print("\nNOT ANSWERED (not 200/SERVING):", bad)
print()
print("B/A CPU per round:", " ".join(f"{x:.2f}" for x in ratios))
PY
