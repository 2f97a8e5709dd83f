#!/usr/bin/env bash
# What tracing and access logs cost a sidecar pair, side by side in one
# run (issue 11): six client-sidecar -> server-sidecar pairs, all up at
# once, one control plane, one echo app behind every server sidecar, and a
# real Jaeger as the trace collector. The pairs differ only in what the
# Telemetry API gives them (a Telemetry selecting each pair's `obs` label):
#
#   plain      nothing: no tracing, no access log
#   trace1     tracing to Jaeger (OTLP/gRPC), randomSamplingPercentage 1
#   trace100   the same at 100
#   logtext    an access log to a file, Istio's text format (both sides)
#   logjson    an access log to a file, Istio's JSON format (both sides)
#   plain2     nothing, as plain: the control — how far two identical
#              pairs differ is the noise floor of the comparison
#
# fortio sends each pair constant 1,000 requests/s over 16 keep-alive
# HTTP/1.1 connections, 1 KiB answers, for ROUNDS rounds. MODE=sequential
# (the default) loads one pair at a time, the scenarios interleaved
# (plain, trace1, trace100, plain2, logtext, logjson, plain, ...), so that
# the machine's noise shows; MODE=concurrent loads every pair at once in
# each round (use a lower QPS), so that every scenario sees the same
# machine and their difference is measured under the same noise. For each
# run: fortio's p50/p90/p99, the CPU time of the pair's two proxies
# (utime+stime from /proc/<pid>/stat, from the start of the load until
# 1.5 s after it, when the last spans have been exported) per request,
# the load average before and after, Jaeger's CPU and accepted spans.
# Results are ratios to the pairs without observability (plain and
# plain2, pooled). Everything runs on 127.0.21.0/24 (Jaeger's ports too)
# and stops by itself.
#
#   bench/observability.sh                     # 3 rounds of 20 s per scenario
#   ROUNDS=2 DURATION=30s QPS=2000 bench/observability.sh
#   MODE=concurrent QPS=300 ROUNDS=5 bench/observability.sh
#   BIN_DIR=/tmp/old bench/observability.sh   # weft and weft-proxy from there
#   SCENARIOS="plain plain2 trace1" bench/observability.sh
#   PROFILE_DIR=/tmp/prof ROUNDS=1 bench/observability.sh  # CPU profiles of round 1 (which they slow down)
#
# Needs: fortio (go install fortio.org/fortio@v1.63.0) and jaeger
# (hack/tools.sh jaeger, into ${WEFT_TOOLS_DIR:-~/.cache/weft-tools}/bin).
# Writes bench/results/observability.md.
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
ROUNDS=${ROUNDS:-3}
MODE=${MODE:-sequential}
FORTIO=${FORTIO:-$(command -v fortio || echo "$HOME/go/bin/fortio")}
JAEGER=${JAEGER:-${WEFT_TOOLS_DIR:-$HOME/.cache/weft-tools}/bin/jaeger}
OUT=${OUT:-bench/results/observability.md}
[ -x "$FORTIO" ] || { echo "fortio not found: go install fortio.org/fortio@v1.63.0" >&2; exit 1; }
[ -x "$JAEGER" ] || { echo "jaeger not found at $JAEGER: hack/tools.sh jaeger" >&2; exit 1; }

work=$(mktemp -d /tmp/weft-obsbench.XXXXXX)
pids=() proxies=()
# Stop the proxies first and wait for them, so that they do not log the
# control plane's departure; then the rest, in reverse order of start.
cleanup() {
  kill "${proxies[@]}" 2>/dev/null || true
  for p in "${proxies[@]}"; do wait "$p" 2>/dev/null || true; done
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ -n "${BIN_DIR:-}" ]; then # prebuilt binaries, e.g. of another commit
  cp "$BIN_DIR/weft" "$BIN_DIR/weft-proxy" "$work/"
else
  echo "building weft and weft-proxy"
  go build -o "$work/weft" ./cmd/weft
  CGO_ENABLED=0 go build -trimpath -tags grpcnotrace -ldflags "-s -w" -o "$work/weft-proxy" ./cmd/weft-proxy # as docs/proxy.md builds it
fi

CP=127.0.21.9 APP=127.0.21.2 J=127.0.21.8
# Scenario names say what the pair gets: traceN (tracing at N%), logtext,
# logjson, lognone (an access log whose filter matches no request: the
# request path's share without formatting or writing); any other name
# (plain, plain2, ...) nothing. At most 10. The pairs named plain* are
# the base of the ratios, pooled (without any: the first).
read -r -a SCENARIOS <<<"${SCENARIOS:-plain trace1 trace100 plain2 logtext logjson}"
# Pair i: client sidecar 127.0.21.1i, server sidecar 127.0.21.2i.
client_ip() { echo "127.0.21.1$1"; }
server_ip() { echo "127.0.21.2$1"; }

# Jaeger: OTLP receivers, query API and its own metrics (accepted spans),
# each on a loopback port; nothing else.
"$JAEGER" \
  --set=receivers.otlp.protocols.grpc.endpoint=$J:4317 \
  --set=receivers.otlp.protocols.http.endpoint=$J:4318 \
  '--set=service.pipelines.traces.receivers=[otlp]' \
  '--set=service.extensions=[jaeger_storage,jaeger_query]' \
  --set=extensions.jaeger_query.http.endpoint=$J:16686 \
  --set=extensions.jaeger_query.grpc.endpoint=$J:16685 \
  --set=extensions.jaeger_query.enable_tracing=false \
  --set=service.telemetry.metrics.level=basic \
  "--set=service.telemetry.metrics.readers=[{pull: {exporter: {prometheus: {host: $J, port: 8888}}}}]" \
  --set=service.telemetry.logs.level=warn >"$work/jaeger.log" 2>&1 & jaeger_pid=$!; pids+=($!)

mkdir -p "$work/config"
cat > "$work/mesh.yaml" <<YAML
extensionProviders:
- name: jaeger
  opentelemetry: {service: $J, port: 4317}
- name: file-text
  envoyFileAccessLog: {path: $work/access-text.log}
- name: file-json
  envoyFileAccessLog:
    path: $work/access-json.log
    logFormat: {labels: {}}
YAML
: > "$work/config/bench.yaml"
for i in "${!SCENARIOS[@]}"; do
  s=${SCENARIOS[i]}
  cat >> "$work/config/bench.yaml" <<YAML
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: obs-$s, namespace: default}
spec:
  hosts: [obs-$s.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: obs-$s}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: obs-$s-server, namespace: default}
spec:
  address: $(server_ip $i)
  ports: {http: 8080}
  labels: {app: obs-$s, version: v1, obs: $s}
YAML
done
telemetry() { # name spec-body: a Telemetry for the pair labelled obs=name
  cat >> "$work/config/bench.yaml" <<YAML
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: obs-$1, namespace: default}
spec:
  selector: {matchLabels: {obs: $1}}
$2
YAML
}
for s in "${SCENARIOS[@]}"; do
  case $s in
    trace*) telemetry "$s" "  tracing: [{providers: [{name: jaeger}], randomSamplingPercentage: ${s#trace}}]" ;;
    logtext) telemetry "$s" "  accessLogging: [{providers: [{name: file-text}]}]" ;;
    logjson) telemetry "$s" "  accessLogging: [{providers: [{name: file-json}]}]" ;;
    lognone) telemetry "$s" "  accessLogging: [{providers: [{name: file-text}], filter: {expression: 'response.code >= 600'}}]" ;;
  esac
done

"$work/weft" serve --config "$work/config" --mesh-config "$work/mesh.yaml" --xds-address $CP:15012 --xds-plaintext-address $CP:15010 \
  --status-address $CP:15014 --log-level error & pids+=($!)
"$work/weft" echo --name obs-server --address $APP:18080 --log-level warn & pids+=($!)
declare -A client_pid server_pid
for i in "${!SCENARIOS[@]}"; do
  s=${SCENARIOS[i]} c=$(client_ip $i) v=$(server_ip $i)
  "$work/weft-proxy" --xds-plaintext --xds-address $CP:15010 --workload obs-$s-server --labels app=obs-$s,version=v1,obs=$s \
    --ip $v --outbound "" --app-port 8080=$APP:18080 --admin-address $v:15000 --log-level warn & server_pid[$s]=$!; proxies+=($!)
  "$work/weft-proxy" --xds-plaintext --xds-address $CP:15010 --workload obs-$s-client --labels app=obs-$s-client,version=v1,obs=$s \
    --ip $c --outbound $c:15001 --admin-address $c:15000 --log-level warn & client_pid[$s]=$!; proxies+=($!)
done

# Wait until Jaeger answers and every pair answers through both sidecars
# with its observability in place: a traced pair's server sees a
# traceparent, a logging pair's line reaches its file.
for i in $(seq 1 150); do
  ok=1
  curl -fsS -o /dev/null "http://$J:16686/api/services" || ok=0
  for j in "${!SCENARIOS[@]}"; do
    s=${SCENARIOS[j]}
    body=$(curl -fsS -H "Host: obs-$s" "http://$(client_ip $j):15001/" 2>/dev/null) || { ok=0; continue; }
    case $s in
      trace*) grep -qi traceparent <<<"$body" || ok=0 ;;
      logtext) [ -s "$work/access-text.log" ] || ok=0 ;;
      logjson) [ -s "$work/access-json.log" ] || ok=0 ;;
    esac
  done
  [ $ok = 1 ] && break
  sleep 0.2
  [ "$i" = 150 ] && { echo "mesh did not come up (jaeger log: $(tail -3 "$work/jaeger.log"))" >&2; exit 1; }
done

hz=$(getconf CLK_TCK)
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
load1() { cut -d' ' -f1 /proc/loadavg; }
spans() { curl -fsS "http://$J:8888/metrics" 2>/dev/null | awk '/^otelcol_receiver_accepted_spans(_total)?\{/ {n+=$NF} END {printf "%d", n}'; }
lines() { [ -f "$1" ] && wc -l < "$1" || echo 0; }

declare -A C0 V0 LOAD0
idx() { local i; for i in "${!SCENARIOS[@]}"; do [ "${SCENARIOS[i]}" = "$1" ] && { echo "$i"; return; }; done; }
begin() { # scenario round: the pair's counters before; its profiles started
  local s=$1 r=$2 i; i=$(idx "$s")
  LOAD0[$s]=$(load1); C0[$s]=$(ticks ${client_pid[$s]}); V0[$s]=$(ticks ${server_pid[$s]})
  if [ -n "${PROFILE_DIR:-}" ] && [ "$r" = 1 ]; then # CPU profiles of both proxies, over most of the run
    mkdir -p "$PROFILE_DIR"
    local secs=$(( ${DURATION%s} > 4 ? ${DURATION%s} - 2 : 2 ))
    curl -fsS -o "$PROFILE_DIR/$s-client.pprof" "http://$(client_ip $i):15000/debug/pprof/profile?seconds=$secs" & prof+=($!)
    curl -fsS -o "$PROFILE_DIR/$s-server.pprof" "http://$(server_ip $i):15000/debug/pprof/profile?seconds=$secs" & prof+=($!)
  fi
}
load() { # scenario round
  "$FORTIO" load -quiet -r "$RESOLUTION" -qps "$QPS" -c "$CONNS" -t "$DURATION" -H "Host: obs-$1" -json "$work/$1-$2.json" \
    "http://$(client_ip "$(idx "$1")"):15001/?size=1024" >/dev/null 2>&1
}
# Jaeger's CPU and accepted spans, and the log files' lines, are counted
# per load period (one scenario, or a whole concurrent round).
shared_begin() { J0=$(ticks $jaeger_pid); SP0=$(spans); LT0=$(lines "$work/access-text.log"); LJ0=$(lines "$work/access-json.log"); }
settle() { # after the load: the last spans (1 s batches) and log lines reach Jaeger and the files; their cost is counted
  [ ${#prof[@]} = 0 ] || wait "${prof[@]}"
  prof=()
  sleep 1.5
  J1=$(ticks $jaeger_pid); SP1=$(spans); LT1=$(lines "$work/access-text.log"); LJ1=$(lines "$work/access-json.log")
}
end() { # scenario round: one row
  local s=$1 r=$2 c=${client_pid[$1]} v=${server_pid[$1]}
  local c1 v1; c1=$(ticks $c); v1=$(ticks $v)
  printf '%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\n' "$s" "$r" "$work/$s-$r.json" $((c1-${C0[$s]})) $((v1-${V0[$s]})) \
    $((J1-J0)) $((SP1-SP0)) $((LT1-LT0+LJ1-LJ0)) "${LOAD0[$s]}" "$(load1)" "$(rss_mb $c)" "$(rss_mb $v)" >> "$work/rows"
}

: > "$work/rows"
before="$(uptime)"
echo "running ($MODE): $ROUNDS rounds x ${#SCENARIOS[@]} scenarios, $DURATION each at $QPS rps over $CONNS connections"
for r in $(seq 1 "$ROUNDS"); do
  prof=()
  if [ "$MODE" = concurrent ]; then
    shared_begin
    for s in "${SCENARIOS[@]}"; do begin "$s" "$r"; done
    loads=()
    n=${#SCENARIOS[@]}
    for k in $(seq 0 $((n - 1))); do # started in a rotating order: no pair always first
      s=${SCENARIOS[$(((k + r) % n))]}
      load "$s" "$r" & loads+=($!)
    done
    wait "${loads[@]}"
    settle
    for s in "${SCENARIOS[@]}"; do end "$s" "$r"; done
    echo "  round $r: load ${LOAD0[${SCENARIOS[0]}]} -> $(load1)"
  else
    for s in "${SCENARIOS[@]}"; do
      shared_begin
      begin "$s" "$r"
      load "$s" "$r"
      settle
      end "$s" "$r"
      echo "  $s round $r: load ${LOAD0[$s]} -> $(load1)"
    done
  fi
done
after="$(uptime)"
dropped=""
for j in "${!SCENARIOS[@]}"; do
  case ${SCENARIOS[j]} in log*) ;; *) continue ;; esac
  for ip in $(client_ip $j) $(server_ip $j); do
    d=$(curl -fsS "http://$ip:15000/stats/prometheus" | awk '/^weft_proxy_access_log_lines_dropped_total/ {n+=$NF} END {printf "%d", n}')
    dropped="$dropped ${SCENARIOS[j]}@$ip=$d"
  done
done

mkdir -p "$(dirname "$OUT")"
python3 - "$work/rows" "$DURATION" "$QPS" "$CONNS" "$ROUNDS" "$hz" "$before" "$after" "$dropped" "$(nproc)" "$MODE" > "$OUT" <<'PY'
import json, statistics, sys
rows_path, duration, qps, conns, rounds, hz, before, after, dropped, ncpu, mode = sys.argv[1:12]
hz = float(hz)
seq = mode != "concurrent"
runs = []
for line in open(rows_path):
    s, r, path, ct, vt, jt, sp, ln, l0, l1, crss, vrss = line.rstrip("\n").split("\t")
    d = json.load(open(path))
    h = d["DurationHistogram"]
    p = {x["Percentile"]: x["Value"] * 1000 for x in h["Percentiles"]}
    n = h["Count"]
    ok = d.get("RetCodes", {}).get("200", 0)
    runs.append(dict(s=s, r=int(r), p50=p[50], p90=p[90], p99=p[99], qps=d["ActualQPS"], n=n, ok=ok,
                     cpu=1e6 * (int(ct) + int(vt)) / hz / n, ccpu=1e6 * int(ct) / hz / n, scpu=1e6 * int(vt) / hz / n,
                     jt=int(jt), spans=int(sp), lines=int(ln), l0=l0, l1=l1, crss=crss, vrss=vrss))
order = []
for x in runs:
    if x["s"] not in order:
        order.append(x["s"])
by = {s: [x for x in runs if x["s"] == s] for s in order}
med = lambda xs, k: statistics.median(x[k] for x in xs)
# The base: every pair without observability (plain, plain2, ...) pooled.
controls = [s for s in order if s.startswith("plain")] or order[:1]
pool = [x for s in controls for x in by[s]]
base_cpu, base_p50, base_p99 = med(pool, "cpu"), med(pool, "p50"), med(pool, "p99")
round_base = {r: statistics.mean(x["cpu"] for x in pool if x["r"] == r) for r in sorted({x["r"] for x in pool})}
print("# What tracing and access logs cost a sidecar pair\n")
how = ("one pair at a time, the scenarios interleaved in each round" if seq else
       "all pairs loaded at once in each round (the same machine conditions for every scenario)")
print(f"bench/observability.sh, MODE={mode}: {rounds} rounds, {duration} per scenario and round, {qps} requests/s over {conns} "
      f"HTTP/1.1 keep-alive connections, 1 KiB answers, through a client sidecar and a server sidecar; {how}. {ncpu} CPUs.\n")
print(f"- load before: `{before.strip()}`")
print(f"- load after: `{after.strip()}`\n")
print("## Each run\n")
extra_h = " Jaeger CPU µs/req | spans accepted | log lines |" if seq else ""
print(f"| scenario | round | p50 ms | p90 ms | p99 ms | rps | 200s | proxy CPU µs/req (client + server) |{extra_h} load 1m before → after |")
print("|---" * (9 + (3 if seq else 0)) + "|")
for x in sorted(runs, key=lambda x: (x["r"], order.index(x["s"]))):
    extra = f" {1e6 * x['jt'] / hz / x['n']:.1f} | {x['spans']} | {x['lines']} |" if seq else ""
    print(f"| {x['s']} | {x['r']} | {x['p50']:.3f} | {x['p90']:.3f} | {x['p99']:.3f} | {x['qps']:.0f} | {x['ok']}/{x['n']} | "
          f"{x['cpu']:.1f} ({x['ccpu']:.1f} + {x['scpu']:.1f}) |{extra} {x['l0']} → {x['l1']} |")
if not seq:
    print("\nJaeger, per round (every pair's load together):\n")
    print("| round | Jaeger CPU s | spans accepted | log lines |")
    print("|---|---|---|---|")
    for r in sorted({x["r"] for x in runs}):
        x = next(x for x in runs if x["r"] == r)
        print(f"| {r} | {x['jt'] / hz:.2f} | {x['spans']} | {x['lines']} |")
print(f"\n## Against the pairs without observability ({' + '.join(controls)} pooled; medians over the rounds)\n")
print(f"Base: {base_cpu:.1f} µs of proxy CPU per request, p50 {base_p50:.3f} ms, p99 {base_p99:.3f} ms.\n")
spans_h = " spans per request |" if seq else ""
print(f"| scenario | proxy CPU µs/req | CPU ratio | extra CPU | per round (vs that round's base) | p50 ms | p99 ms | added p99 | p99 ratio |{spans_h}")
print("|---" * (9 + (1 if seq else 0)) + "|")
for s in order:
    cpu, p99 = med(by[s], "cpu"), med(by[s], "p99")
    per = ", ".join(f"{100 * (x['cpu'] / round_base[x['r']] - 1):+.1f}%" for x in by[s] if x["r"] in round_base)
    spr = f" {sum(x['spans'] for x in by[s]) / max(1, sum(x['n'] for x in by[s])):.4f} |" if seq else ""
    print(f"| {s} | {cpu:.1f} | {cpu / base_cpu:.3f} | {100 * (cpu / base_cpu - 1):+.1f}% | {per} | {med(by[s], 'p50'):.3f} | {p99:.3f} | "
          f"{p99 - base_p99:+.3f} ms | {p99 / base_p99:.2f} |{spr}")
if len(controls) > 1:
    a, b = controls[0], controls[1]
    ra = {x["r"]: x["cpu"] for x in by[a]}
    per = [100 * (x["cpu"] / ra[x["r"]] - 1) for x in by[b] if x["r"] in ra]
    print(f"\nNoise floor: {b} against {a}, two identical pairs, CPU per request per round: "
          + ", ".join(f"{v:+.1f}%" for v in per) + f" (median {statistics.median(per):+.1f}%).")
spread = [100 * (max(x["cpu"] for x in by[s]) / min(x["cpu"] for x in by[s]) - 1) for s in order]
print(f"\nRun-to-run spread of CPU per request within a scenario (max/min − 1): "
      + ", ".join(f"{s} {v:.0f}%" for s, v in zip(order, spread)) + ".")
print(f"\nAccess log lines dropped (weft_proxy_access_log_lines_dropped_total):{dropped or ' -'}.")
PY
cat "$OUT"
