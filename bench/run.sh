#!/usr/bin/env bash
# Latency and footprint of one and two Weft sidecar hops, plaintext and
# with mutual TLS between the sidecars, side by side in one run against a
# direct connection and nginx (Debian): one nginx hop, two nginx processes,
# and two nginx processes with mutual TLS between them. Constant 1,000
# requests/s (QPS) over 16 HTTP/1.1 keep-alive connections, 1 KiB response
# bodies (fortio); the plaintext paths again at 5,000 requests/s
# (QPS_HIGH); and the plaintext paths with HTTP/2 from the client at QPS:
#
#   h2c    fortio -h2 (prior knowledge) to the first proxy; behind it
#          HTTP/1.1 as the service port says (Weft: protocol HTTP; nginx:
#          listen ... http2, proxy_pass), 1 KiB bodies from `weft echo`
#   grpc   fortio -grpc -ping with 1 KiB payloads, h2c end to end, to
#          `fortio server` (Weft: protocol GRPC; nginx: grpc_pass)
#
# Everything runs on 127.0.20.0/24 and stops by itself.
#
#   bench/run.sh                 # 20 s per scenario
#   QUICK=1 bench/run.sh         # 3 s per scenario: a smoke test
#   DURATION=60s QPS=2000 QPS_HIGH=0 PROTOCOLS=h1 bench/run.sh
#   ROUNDS=3 bench/run.sh        # every scenario 3 times, interleaved; each
#                                # row is the median round, with the p99s'
#                                # range (a shared machine's tail is noisy)
#   PROXY_ENV=GOMAXPROCS=1 bench/run.sh    # environment of every weft-proxy
#   PROXY_ARGS="--log-level error" bench/run.sh # more weft-proxy flags
#   BIN_DIR=/tmp/build bench/run.sh   # weft and weft-proxy built beforehand
#   PROFILE_DIR=bench/results/x bench/run.sh  # CPU and heap profiles, smaps_rollup
#       also takes a CPU profile of every Weft proxy on the path of each
#       scenario, over the scenario (<scenario>-<proxy>.cpu.pprof; the
#       profiler's own cost is in that run's CPU per request)
#
# Needs: fortio (go install fortio.org/fortio@v1.63.0), nginx (apt-get
# install nginx-light; its http_v2 and grpc modules). bench/all.sh
# installs both. Writes bench/results/latest.md and, for bench/all.sh,
# bench/results/latest.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${QUICK:-0}" = 1 ]; then DURATION=${DURATION:-3s}; fi
DURATION=${DURATION:-20s}
ROUNDS=${ROUNDS:-1}
QPS=${QPS:-1000}
QPS_HIGH=${QPS_HIGH:-5000} # 0: no second rate
CONNS=${CONNS:-16}
# fortio's histogram: the lowest buckets are RESOLUTION seconds wide (its
# default, 1 ms, puts every sub-millisecond answer in one bucket and reads
# a p99 between 1 and 3 ms to the nearest bucket). 10 µs: buckets of 0.1 ms
# up to 1 ms, 0.2 ms up to 2 ms, 0.5 ms up to 5 ms.
RESOLUTION=${RESOLUTION:-0.00001}
PROTOCOLS=${PROTOCOLS:-h1 h2c grpc}
FORTIO=${FORTIO:-$(command -v fortio || echo "$HOME/go/bin/fortio")}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
[ -x "$FORTIO" ] || { echo "fortio not found: go install fortio.org/fortio@v1.63.0" >&2; exit 1; }
[ -x "$NGINX" ] || { echo "nginx not found: apt-get install -y nginx-light" >&2; exit 1; }

work=$(mktemp -d /tmp/weft-bench.XXXXXX)
pids=()
# Stop in reverse order of start: proxies before the control plane, so they
# do not log its departure.
cleanup() { for ((i=${#pids[@]}-1; i>=0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

if [ -n "${BIN_DIR:-}" ]; then
  echo "using weft and weft-proxy from $BIN_DIR"
  cp "$BIN_DIR/weft" "$BIN_DIR/weft-proxy" "$work/"
else
  echo "building weft and weft-proxy"
  go build -o "$work/weft" ./cmd/weft
  CGO_ENABLED=0 go build -trimpath -tags grpcnotrace -ldflags "-s -w" -o "$work/weft-proxy" ./cmd/weft-proxy # as docs/proxy.md builds it
fi

CLIENT=127.0.20.1 SERVER=127.0.20.2 NGINXIP=127.0.20.3
MTLS_CLIENT=127.0.20.11 MTLS_SERVER=127.0.20.12
mkdir -p "$work/config"
cat > "$work/config/bench.yaml" <<YAML
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
metadata: {name: bench-server, namespace: default}
spec:
  address: $SERVER
  ports: {http: 8080, grpc: 8079}
  labels: {app: bench, version: v1}
---
# fortio's gRPC ping server on the same workload: h2c end to end.
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: bench-grpc, namespace: default}
spec:
  hosts: [bench-grpc.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8079, name: grpc, protocol: GRPC}]
  workloadSelector: {labels: {app: bench}}
---
# The same server behind a sidecar that has a workload certificate: its
# clients reach it over mutual TLS (auto mTLS, from the tlsMode label).
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: bench-mtls, namespace: default}
spec:
  hosts: [bench-mtls.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: bench-mtls}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: bench-mtls-server, namespace: default}
spec:
  address: $MTLS_SERVER
  ports: {http: 8080}
  serviceAccount: bench-mtls-server
  labels: {app: bench-mtls, version: v1, security.istio.io/tlsMode: istio}
YAML

# The plaintext xDS port: this run measures the data plane without TLS.
"$work/weft" serve --config "$work/config" --xds-address 127.0.20.9:15012 --xds-plaintext-address 127.0.20.9:15010 --status-address 127.0.20.9:15014 --log-level warn & pids+=($!)
for i in $(seq 1 50); do curl -fsS -o /dev/null http://127.0.20.9:15014/status && break; sleep 0.1; done
"$work/weft" echo --name bench-server --address $SERVER:18080 --log-level warn & pids+=($!)
# The gRPC upstream: fortio's ping service (its HTTP port is unused).
"$FORTIO" server -quiet -grpc-port $SERVER:18079 -http-port $SERVER:18081 -redirect-port disabled >"$work/fortio-server.log" 2>&1 & pids+=($!)
# shellcheck disable=SC2086 # PROXY_ENV and PROXY_ARGS are word lists
env ${PROXY_ENV:-} "$work/weft-proxy" --xds-plaintext --xds-address 127.0.20.9:15010 --workload bench-server --labels app=bench,version=v1 \
  --ip $SERVER --outbound "" --app-port 8080=$SERVER:18080,8079=$SERVER:18079 --admin-address $SERVER:15000 --log-level warn ${PROXY_ARGS:-} & server_proxy=$!; pids+=($!)
# shellcheck disable=SC2086
env ${PROXY_ENV:-} "$work/weft-proxy" --xds-plaintext --xds-address 127.0.20.9:15010 --workload bench-client --labels app=client,version=v1 \
  --ip $CLIENT --outbound $CLIENT:15001 --admin-address $CLIENT:15000 --log-level warn ${PROXY_ARGS:-} & client_proxy=$!; pids+=($!)

# The mutual-TLS pair: sidecars on the secure port, each with a bootstrap
# token for its service account; the server shares the echo app.
"$work/weft" token --control-plane 127.0.20.9:15014 --namespace default --service-account bench-mtls-server \
  --root-cert-out "$work/root.pem" > "$work/server.token"
"$work/weft" token --control-plane 127.0.20.9:15014 --namespace default --service-account bench-mtls-client > "$work/client.token"
env ${PROXY_ENV:-} "$work/weft-proxy" --xds-address 127.0.20.9:15012 --root-cert "$work/root.pem" --token-file "$work/server.token" \
  --workload bench-mtls-server --service-account bench-mtls-server --labels app=bench-mtls,version=v1 \
  --ip $MTLS_SERVER --outbound "" --app-port 8080=$SERVER:18080 --admin-address $MTLS_SERVER:15000 --log-level warn ${PROXY_ARGS:-} & mtls_server_proxy=$!; pids+=($!)
env ${PROXY_ENV:-} "$work/weft-proxy" --xds-address 127.0.20.9:15012 --root-cert "$work/root.pem" --token-file "$work/client.token" \
  --workload bench-mtls-client --service-account bench-mtls-client --labels app=client,version=v1 \
  --ip $MTLS_CLIENT --outbound $MTLS_CLIENT:15001 --admin-address $MTLS_CLIENT:15000 --log-level warn ${PROXY_ARGS:-} & mtls_client_proxy=$!; pids+=($!)
# The Weft proxies' admin addresses and names, for PROFILE_DIR.
declare -A admin_of=([$server_proxy]="$SERVER:15000 server" [$client_proxy]="$CLIENT:15000 client"
  [$mtls_server_proxy]="$MTLS_SERVER:15000 mtls-server" [$mtls_client_proxy]="$MTLS_CLIENT:15000 mtls-client")

# start_nginx NAME LISTEN UPSTREAM: one nginx worker reverse-proxying
# LISTEN to UPSTREAM over keep-alive HTTP/1.1; prints its pid.
start_nginx() {
  cat > "$work/$1.conf" <<NGX
worker_processes 1;
daemon off;
pid $work/$1.pid;
error_log $work/$1-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  upstream up { server $3; keepalive 64; }
  server {
    listen $2;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGX
  "$NGINX" -c "$work/$1.conf" -p "$work" >/dev/null 2>&1 &
  echo $!
}
nginx_pid=$(start_nginx nginx "$NGINXIP:8080" "$SERVER:18080"); pids+=("$nginx_pid")
# A second nginx in front of the first: the peer for two sidecar hops
# (two processes on the path, as with a client and a server sidecar).
NGINX2IP=127.0.20.4
nginx2_pid=$(start_nginx nginx2 "$NGINX2IP:8080" "$NGINXIP:8080"); pids+=("$nginx2_pid")

# The HTTP/2 peers. nginx-light has http_v2 and grpc: a plaintext
# `listen ... http2` is h2c with prior knowledge. h2c: HTTP/2 in front,
# HTTP/1.1 behind (proxy_pass speaks nothing else), as Weft's HTTP port.
# gRPC: grpc_pass, h2c on every hop, as Weft's GRPC port.
# start_nginx_h2 NAME LISTEN LOCATION: one worker; prints its pid.
start_nginx_h2() {
  cat > "$work/$1.conf" <<NGX
worker_processes 1;
daemon off;
pid $work/$1.pid;
error_log $work/$1-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  upstream up { server $SERVER:18080; keepalive 64; }
  upstream h1front { server $NGINXIP:8080; keepalive 64; }
  upstream grpcup { server $SERVER:18079; keepalive 64; }
  upstream grpcback { server $NGINX_GRPC:8079; keepalive 64; }
  server {
    listen $2 http2;
    keepalive_requests 1000000;
    location / { $3 }
  }
}
NGX
  "$NGINX" -c "$work/$1.conf" -p "$work" >/dev/null 2>&1 &
  echo $!
}
NGINX_H2C=127.0.20.7 NGINX_H2C2=127.0.20.8 NGINX_GRPC=127.0.20.13 NGINX_GRPC2=127.0.20.14
h1pass='proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";'
nginx_h2c_pid=$(start_nginx_h2 nginx-h2c "$NGINX_H2C:8080" "$h1pass"); pids+=("$nginx_h2c_pid")
nginx_h2c2_pid=$(start_nginx_h2 nginx-h2c2 "$NGINX_H2C2:8080" "${h1pass/up;/h1front;}"); pids+=("$nginx_h2c2_pid")
nginx_grpc_pid=$(start_nginx_h2 nginx-grpc "$NGINX_GRPC:8079" 'grpc_pass grpc://grpcup;'); pids+=("$nginx_grpc_pid")
nginx_grpc2_pid=$(start_nginx_h2 nginx-grpc2 "$NGINX_GRPC2:8079" 'grpc_pass grpc://grpcback;'); pids+=("$nginx_grpc2_pid")

# The peer for two mutual-TLS hops: two nginx processes with TLS between
# them, client certificates required and verified, keep-alive upstream and
# TLS session reuse; ECDSA P-256 certificates from a CA made here, as
# Weft's. front (plaintext in) -> TLS -> back -> the echo app.
NGINX_TLS_FRONT=127.0.20.5 NGINX_TLS_BACK=127.0.20.6
pki="$work/pki"; mkdir -p "$pki"
( cd "$pki"
  openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
  openssl req -x509 -new -key ca.key -subj /CN=bench-ca -days 2 -out ca.crt 2>/dev/null
  for n in server client; do
    openssl ecparam -name prime256v1 -genkey -noout -out $n.key 2>/dev/null
    openssl req -new -key $n.key -subj /CN=$n -out $n.csr 2>/dev/null
    printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\n' $n > $n.ext
    openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile $n.ext -out $n.crt 2>/dev/null
  done )
cat > "$work/nginx-tls-back.conf" <<NGX
worker_processes 1;
daemon off;
pid $work/nginx-tls-back.pid;
error_log $work/nginx-tls-back-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  upstream up { server $SERVER:18080; keepalive 64; }
  server {
    listen $NGINX_TLS_BACK:8443 ssl;
    ssl_certificate $pki/server.crt;
    ssl_certificate_key $pki/server.key;
    ssl_client_certificate $pki/ca.crt;
    ssl_verify_client on;
    ssl_session_cache shared:tls:1m;
    keepalive_requests 100000;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGX
cat > "$work/nginx-tls-front.conf" <<NGX
worker_processes 1;
daemon off;
pid $work/nginx-tls-front.pid;
error_log $work/nginx-tls-front-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  upstream up { server $NGINX_TLS_BACK:8443; keepalive 64; }
  server {
    listen $NGINX_TLS_FRONT:8080;
    keepalive_requests 100000;
    location / {
      proxy_pass https://up; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ssl_certificate $pki/client.crt; proxy_ssl_certificate_key $pki/client.key;
      proxy_ssl_trusted_certificate $pki/ca.crt; proxy_ssl_verify on; proxy_ssl_name server;
      proxy_ssl_session_reuse on;
    }
  }
}
NGX
"$NGINX" -c "$work/nginx-tls-back.conf" -p "$work" >/dev/null 2>&1 & nginx_tls_back_pid=$!; pids+=($!)
"$NGINX" -c "$work/nginx-tls-front.conf" -p "$work" >/dev/null 2>&1 & nginx_tls_front_pid=$!; pids+=($!)

# grpc_ok ADDR [AUTHORITY]: one gRPC ping through ADDR answers.
grpc_ok() { "$FORTIO" load -quiet -grpc -ping -n 1 -c 1 -qps 0 ${2:+-H "Host: $2"} "$1" >/dev/null 2>&1; }
# Wait until both sidecars are ready and the two-hop path answers.
for i in $(seq 1 100); do
  if curl -fsS -o /dev/null http://$SERVER:15000/ready && curl -fsS -o /dev/null http://$CLIENT:15000/ready \
     && curl -fsS -o /dev/null -H 'Host: bench' "http://$CLIENT:15001/" && curl -fsS -o /dev/null "http://$NGINX2IP:8080/" \
     && curl -fsS -o /dev/null -H 'Host: bench-mtls' "http://$MTLS_CLIENT:15001/" && curl -fsS -o /dev/null "http://$NGINX_TLS_FRONT:8080/" \
     && curl -fsS -o /dev/null --http2-prior-knowledge "http://$NGINX_H2C2:8080/" \
     && grpc_ok "$NGINX_GRPC2:8079" && grpc_ok "$CLIENT:15001" bench-grpc:8079; then break; fi
  sleep 0.1
  [ "$i" = 100 ] && { echo "mesh did not come up" >&2; for f in "$work"/*.log; do echo "== $f" >&2; tail -n 5 "$f" >&2; done; exit 1; }
done

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
# CPU and memory of a process and its children (nginx's master + worker).
tree() { echo "$1"; pgrep -P "$1" || true; }
cpu_ticks() { local t=0; for p in $(tree "$1"); do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }
rss_kb() { local t=0; for p in $(tree "$1"); do t=$((t + $(awk '/VmRSS/ {print $2}' "/proc/$p/status"))); done; echo $t; }
hz=$(getconf CLK_TCK)

# run NAME PROTO QPS URL HOST [pids of the proxies on the path]: one
# fortio run; a row in $work/rows. PROTO: h1, h2c or grpc.
run() {
  local name=$1 proto=$2 qps=$3 url=$4 host=$5; shift 5
  local pids=("$@") t0=0 t1=0 p args=()
  case $proto in
    h2c) args=(-h2) ;;
    grpc) args=(-grpc -ping -payload-size 1024) ;;
  esac
  for p in "${pids[@]}"; do t0=$((t0 + $(cpu_ticks "$p"))); done
  local profs=() a role
  if [ -n "${PROFILE_DIR:-}" ]; then
    mkdir -p "$PROFILE_DIR"
    local secs=${DURATION%s}
    for p in "${pids[@]}"; do
      [ -n "${admin_of[$p]:-}" ] || continue # not a Weft proxy
      read -r a role <<< "${admin_of[$p]}"
      curl -fsS -o "$PROFILE_DIR/$name-$role.cpu.pprof" "http://$a/debug/pprof/profile?seconds=$secs" & profs+=($!)
    done
  fi
  "$FORTIO" load -quiet -r "$RESOLUTION" -qps "$qps" -c "$CONNS" -t "$DURATION" "${args[@]}" -H "Host: $host" -json "$work/$name.json" "$url" >/dev/null 2>&1 \
    || echo "$name: fortio failed" >&2
  for p in "${profs[@]}"; do wait "$p" || echo "$name: a profile failed" >&2; done
  if [ -n "${PROFILE_DIR:-}" ]; then
    # What is resident as the load ends: the heap profile (in-use and
    # allocated) and the kernel's split of the RSS (anonymous vs file).
    for p in "${pids[@]}"; do
      [ -n "${admin_of[$p]:-}" ] || continue
      read -r a role <<< "${admin_of[$p]}"
      curl -fsS -o "$PROFILE_DIR/$name-$role.heap.pprof" "http://$a/debug/pprof/heap" || echo "$name: a heap profile failed" >&2
      curl -fsS "http://$a/debug/pprof/heap?debug=1" | sed -n '/^# runtime.MemStats/,$p' > "$PROFILE_DIR/$name-$role.memstats" || true
      cat "/proc/$p/smaps_rollup" > "$PROFILE_DIR/$name-$role.smaps_rollup" 2>/dev/null || true
    done
  fi
  local cpu="-" rss="-"
  if [ ${#pids[@]} -gt 0 ]; then
    for p in "${pids[@]}"; do t1=$((t1 + $(cpu_ticks "$p"))); done
    cpu=$((t1 - t0))
    rss=""
    for p in "${pids[@]}"; do rss="$rss$(rss_kb "$p") "; done
  fi
  python3 - "$work/$name.json" "$name" "$proto" "$qps" "$cpu" "$rss" "$hz" >> "$work/rows.$round" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
h = d["DurationHistogram"]
p = {x["Percentile"]: x["Value"] * 1000 for x in h["Percentiles"]}
codes = d.get("RetCodes", {})
ok = codes.get("200", 0) + codes.get("SERVING", 0)  # gRPC ping answers count as SERVING
name, proto, qps, cpu, rss, hz = sys.argv[2:8]
dur = h["Count"] / d["ActualQPS"] if d["ActualQPS"] else 0
us = "-" if cpu == "-" or not h["Count"] else f"{1e6 * int(cpu) / int(hz) / h['Count']:.1f}"
busy = "-" if cpu == "-" or not dur else f"{100 * int(cpu) / int(hz) / d['ActualDuration'] * 1e9:.1f}"
rss = "-" if rss.strip() in ("", "-") else " ".join(f"{int(k)/1024:.1f}" for k in rss.split())
print("\t".join([name, proto, qps, f"{p.get(50,0):.3f}", f"{p.get(90,0):.3f}", f"{p.get(99,0):.3f}", f'{d["ActualQPS"]:.0f}', f"{ok}/{h['Count']}", us, busy, rss]))
PY
}

echo "running scenarios: $DURATION each at $QPS rps (HTTP/1.1 also at ${QPS_HIGH} rps) over $CONNS connections; protocols: $PROTOCOLS; rounds: $ROUNDS"
rates=("$QPS")
[ "$QPS_HIGH" != 0 ] && rates+=("$QPS_HIGH")
for round in $(seq 1 "$ROUNDS"); do
: > "$work/rows.$round"
for proto in $PROTOCOLS; do
  case $proto in
  h1)
    for q in "${rates[@]}"; do
      sfx=""; [ "$q" != "$QPS" ] && sfx="@$q"
      run "direct$sfx" h1 "$q" "http://$SERVER:18080/?size=1024" bench
      run "nginx$sfx" h1 "$q" "http://$NGINXIP:8080/?size=1024" bench "$nginx_pid"
      run "one-hop$sfx" h1 "$q" "http://$SERVER:8080/?size=1024" bench "$server_proxy"
      run "two-hops$sfx" h1 "$q" "http://$CLIENT:15001/?size=1024" bench "$client_proxy" "$server_proxy"
      run "nginx-two-hops$sfx" h1 "$q" "http://$NGINX2IP:8080/?size=1024" bench "$nginx2_pid" "$nginx_pid"
      if [ -z "$sfx" ]; then
        run two-hops-mtls h1 "$q" "http://$MTLS_CLIENT:15001/?size=1024" bench-mtls "$mtls_client_proxy" "$mtls_server_proxy"
        run nginx-two-hops-tls h1 "$q" "http://$NGINX_TLS_FRONT:8080/?size=1024" bench "$nginx_tls_front_pid" "$nginx_tls_back_pid"
      fi
    done ;;
  h2c)
    run h2c-direct h2c "$QPS" "http://$SERVER:18080/?size=1024" bench
    run h2c-nginx h2c "$QPS" "http://$NGINX_H2C:8080/?size=1024" bench "$nginx_h2c_pid"
    run h2c-one-hop h2c "$QPS" "http://$SERVER:8080/?size=1024" bench "$server_proxy"
    run h2c-two-hops h2c "$QPS" "http://$CLIENT:15001/?size=1024" bench "$client_proxy" "$server_proxy"
    run h2c-nginx-two-hops h2c "$QPS" "http://$NGINX_H2C2:8080/?size=1024" bench "$nginx_h2c2_pid" "$nginx_pid" ;;
  grpc)
    run grpc-direct grpc "$QPS" "$SERVER:18079" bench-grpc:8079
    run grpc-nginx grpc "$QPS" "$NGINX_GRPC:8079" bench-grpc:8079 "$nginx_grpc_pid"
    run grpc-one-hop grpc "$QPS" "$SERVER:8079" bench-grpc:8079 "$server_proxy"
    run grpc-two-hops grpc "$QPS" "$CLIENT:15001" bench-grpc:8079 "$client_proxy" "$server_proxy"
    run grpc-nginx-two-hops grpc "$QPS" "$NGINX_GRPC2:8079" bench-grpc:8079 "$nginx_grpc2_pid" "$nginx_grpc_pid" ;;
  *) echo "PROTOCOLS: unknown protocol $proto (want h1, h2c, grpc)" >&2; exit 2 ;;
  esac
done
done
# One row per scenario: the round whose p99 is the median of the rounds'
# (the whole row, so its numbers belong together), and the p99s' range.
python3 - "$work" "$ROUNDS" > "$work/rows" 3> "$work/p99range" <<'PY'
import os, sys
work, rounds = sys.argv[1], int(sys.argv[2])
runs = [[l.rstrip("\n").split("\t") for l in open(f"{work}/rows.{i}")] for i in range(1, rounds + 1)]
rng = os.fdopen(3, "w")
for i, row in enumerate(runs[0]):
    same = sorted((r[i] for r in runs if i < len(r)), key=lambda r: float(r[5]))
    print("\t".join(same[len(same) // 2]))
    print(row[0], " ".join(r[5] for r in same), file=rng)
PY
cp "$work/rows" bench/results/latest.tsv

python3 - "$work/rows" "$DURATION" "$QPS" "$CONNS" "$(nproc) CPUs, $(uname -r), load before the run: $load_before" "$ROUNDS" "$work/p99range" > bench/results/latest.md <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
by = {r[0]: r for r in rows}
rounds = int(sys.argv[6])
p99s = {l.split()[0]: l.split()[1:] for l in open(sys.argv[7])}
print(f"# Proxy latency, {sys.argv[2]} per scenario, {sys.argv[4]} connections, 1 KiB bodies\n")
print(f"{sys.argv[5]}. Added latency is over the direct row of the same protocol and rate.", end="")
if rounds > 1:
    print(f" Every scenario ran {rounds} times, interleaved; each row is its median round by p99, and the last column lists every round's p99.", end="")
print("\n")
extra = " p99 ms of each round |" if rounds > 1 else ""
print("| scenario | protocol | rps asked | p50 ms | p90 ms | p99 ms | added p50 | added p99 | rps | answered | proxy CPU µs/request (all hops) | proxy CPU busy % | proxy RSS MiB (each) |" + extra)
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if rounds > 1 else ""))
def base(r):
    """The direct row of r's protocol and rate."""
    pre = {"h1": "", "h2c": "h2c-", "grpc": "grpc-"}[r[1]]
    sfx = "" if r[2] == sys.argv[3] else "@" + r[2]
    return by.get(pre + "direct" + sfx)
for r in rows:
    d = base(r)
    a50 = f"{float(r[3]) - float(d[3]):+.3f} ms" if d else "-"
    a99 = f"{float(r[5]) - float(d[5]):+.3f} ms" if d else "-"
    more = f" {' '.join(p99s.get(r[0], []))} |" if rounds > 1 else ""
    print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} | {a50} | {a99} | {r[6]} | {r[7]} | {r[8]} | {r[9]} | {r[10]} |{more}")
print()
def compare(label, weft, peer):
    w, n = by.get(weft), by.get(peer)
    if not (w and n):
        return
    d = base(w)
    def ratio(i):
        dn = float(n[i]) - float(d[i])
        return f"{(float(w[i]) - float(d[i])) / dn:.1f}x" if dn > 0.005 else "n/a (peer added < 5 us)"
    cpu = f"{float(w[8]) / float(n[8]):.1f}x" if w[8] != "-" and n[8] != "-" and float(n[8]) > 0 else "-"
    print(f"- {label}, Weft/nginx: added p50 {ratio(3)}, added p99 {ratio(5)}, CPU per request {cpu}")
for sfx, rate in [("", sys.argv[3])] + sorted({("@" + r[2], r[2]) for r in rows if r[2] != sys.argv[3]}):
    compare(f"HTTP/1.1 one hop at {rate} rps", "one-hop" + sfx, "nginx" + sfx)
    compare(f"HTTP/1.1 two hops at {rate} rps", "two-hops" + sfx, "nginx-two-hops" + sfx)
compare("two mutual-TLS hops", "two-hops-mtls", "nginx-two-hops-tls")
compare("h2c one hop", "h2c-one-hop", "h2c-nginx")
compare("h2c two hops", "h2c-two-hops", "h2c-nginx-two-hops")
compare("gRPC one hop", "grpc-one-hop", "grpc-nginx")
compare("gRPC two hops", "grpc-two-hops", "grpc-nginx-two-hops")
def cpu(name):
    r = by.get(name)
    return float(r[8]) if r and r[8] != "-" else None
pt, mt, nt, nmt = cpu("two-hops"), cpu("two-hops-mtls"), cpu("nginx-two-hops"), cpu("nginx-two-hops-tls")
if pt and mt:
    print(f"- mutual TLS, CPU per request over plaintext (two hops, kept-alive connections): Weft {100*(mt-pt)/pt:+.0f}%", end="")
    if nt and nmt:
        print(f", nginx {100*(nmt-nt)/nt:+.0f}%", end="")
    print()
PY
cat bench/results/latest.md
