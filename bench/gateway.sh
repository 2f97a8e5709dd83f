#!/usr/bin/env bash
# Gateway benchmarks, side by side in one run on loopback:
#
#  1. HTTPS at the edge: the Weft gateway (weft-proxy --gateway, a Gateway
#     SIMPLE server with credentialName) and nginx terminating TLS with the
#     same certificate, both forwarding to the same echo backend over
#     keep-alive HTTP/1.1; plus the backend straight (plaintext), the
#     baseline the added latency is measured from. Latency at a constant
#     rate, then throughput with no rate limit and the CPU each proxy
#     spent per 1,000 requests (from /proc: user+system time of all its
#     processes).
#  2. TCP: the Weft gateway's TCP server and haproxy in mode tcp, both in
#     front of fortio's TCP echo; echo round trips with no rate limit, and
#     CPU per 1,000 round trips.
#
#   bench/gateway.sh                    # 15 s per measurement
#   DURATION=30s QPS=2000 bench/gateway.sh
#
# Needs fortio (go install fortio.org/fortio@v1.63.0), nginx
# (apt-get install nginx-light), haproxy, openssl. Everything binds
# 127.0.21.0/24 and stops by itself. Writes bench/results/gateway.md.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-15s}
QPS=${QPS:-1000}
CONNS=${CONNS:-16}
# fortio's histogram: the lowest buckets are RESOLUTION seconds wide (its
# default, 1 ms, puts every sub-millisecond answer in one bucket and reads
# a p99 between 1 and 3 ms to the nearest bucket). 10 µs: buckets of 0.1 ms
# up to 1 ms, 0.2 ms up to 2 ms, 0.5 ms up to 5 ms.
RESOLUTION=${RESOLUTION:-0.00001}
FORTIO=${FORTIO:-$(command -v fortio || echo "$HOME/go/bin/fortio")}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
HAPROXY=${HAPROXY:-$(command -v haproxy || echo /usr/sbin/haproxy)}
for b in "$FORTIO" "$NGINX" "$HAPROXY" "$(command -v openssl)"; do
	[ -x "$b" ] || { echo "missing $b (see the header of $0)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/weft-gwbench.XXXXXX)
pids=()
cleanup() { for ((i=${#pids[@]}-1; i>=0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

BACKEND=127.0.21.1 GW=127.0.21.2 NGX=127.0.21.3 HAP=127.0.21.4 CP=127.0.21.9
HOST=app.example.com

echo "building weft and weft-proxy"
go build -o "$work/weft" ./cmd/weft
CGO_ENABLED=0 go build -trimpath -tags grpcnotrace -ldflags "-s -w" -o "$work/weft-proxy" ./cmd/weft-proxy # as docs/proxy.md builds it

echo "certificates"
mkdir -p "$work/credentials/app-cert"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=bench-ca \
	-keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$HOST" \
	-keyout "$work/credentials/app-cert/tls.key" -out "$work/app.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s\n' "$HOST" > "$work/san.ext"
openssl x509 -req -in "$work/app.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial -days 1 \
	-extfile "$work/san.ext" -out "$work/credentials/app-cert/tls.crt" 2>/dev/null

mkdir -p "$work/config"
cat > "$work/config/gateway.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: default}
spec:
  hosts: [web.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}, {number: 8078, name: tcp, protocol: TCP}]
  endpoints: [{address: $BACKEND}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [$HOST]
    tls: {mode: SIMPLE, credentialName: app-cert}
  - port: {number: 9000, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app, namespace: istio-system}
spec:
  hosts: [$HOST]
  gateways: [ingress]
  http:
  - route: [{destination: {host: web.default.svc.cluster.local, port: {number: 8080}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp, namespace: istio-system}
spec:
  hosts: ["*"]
  gateways: [ingress]
  tcp:
  - route: [{destination: {host: web.default.svc.cluster.local, port: {number: 8078}}}]
YAML

cat > "$work/nginx.conf" <<NGINX
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream web { server $BACKEND:8080; keepalive 64; }
  server {
    listen $NGX:8443 ssl;
    server_name $HOST;
    ssl_certificate $work/credentials/app-cert/tls.crt;
    ssl_certificate_key $work/credentials/app-cert/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://web;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
    }
  }
}
NGINX

cat > "$work/haproxy.cfg" <<HAP
global
  nbthread 2
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend tcp_in
  bind $HAP:9000
  default_backend echo
backend echo
  server echo1 $BACKEND:8078
HAP

echo "starting the backend, the control plane, the gateway, nginx and haproxy"
"$FORTIO" server -http-port "$BACKEND:8080" -tcp-port "$BACKEND:8078" -grpc-port disabled -redirect-port disabled \
	-udp-port disabled -loglevel Error > "$work/backend.log" 2>&1 & pids+=($!)
"$work/weft" serve --config "$work/config" --xds-address $CP:15012 --xds-plaintext-address $CP:15010 \
	--status-address $CP:15014 --log-level warn & pids+=($!)
"$work/weft-proxy" --gateway --xds-plaintext --xds-address $CP:15010 --workload ingress --namespace istio-system \
	--labels istio=ingressgateway --ip $GW --gateway-bind $GW --credential-dir "$work/credentials" \
	--admin-address $GW:15000 --log-level warn & gwpid=$!; pids+=($gwpid)
"$NGINX" -c "$work/nginx.conf" -g 'daemon off;' & ngxpid=$!; pids+=($ngxpid)
"$HAPROXY" -f "$work/haproxy.cfg" -db & happid=$!; pids+=($happid)

for i in $(seq 1 100); do
	if curl -sf --cacert "$work/ca.crt" --resolve "$HOST:8443:$GW" "https://$HOST:8443/" -o /dev/null; then break; fi
	[ "$i" = 100 ] && { echo "the gateway did not serve https in 20 s" >&2; exit 1; }
	sleep 0.2
done

# cpu_ticks PID...: user+system clock ticks of the processes and their
# children threads.
cpu_ticks() {
	local t=0 p
	for p in "$@"; do
		for q in $p $(pgrep -P "$p" || true); do
			[ -r /proc/$q/stat ] && t=$((t + $(awk '{print $14+$15}' /proc/$q/stat)))
		done
	done
	echo $t
}
TICKS=$(getconf CLK_TCK)

# load NAME URL EXTRA... : fortio at QPS, then with no limit; prints a
# table row from the JSON.
results=()
load() {
	local name=$1 url=$2 procs=$3; shift 3
	local f="$work/run-${#results[@]}-$RANDOM"
	local log="$work/fortio.log"
	"$FORTIO" load -quiet -r "$RESOLUTION" -qps "$QPS" -c "$CONNS" -t "$DURATION" -json "$f-rate.json" "$@" "$url" >>"$log" 2>&1 ||
		{ echo "fortio failed on $name:" >&2; grep -m1 -B6 "^panic" "$log" >&2; exit 1; }
	local before after
	before=$(cpu_ticks $procs)
	"$FORTIO" load -quiet -r "$RESOLUTION" -qps 0 -c "$CONNS" -t "$DURATION" -json "$f-max.json" "$@" "$url" >>"$log" 2>&1 ||
		{ echo "fortio failed on $name:" >&2; grep -m1 -B6 "^panic" "$log" >&2; exit 1; }
	after=$(cpu_ticks $procs)
	results+=("$(python3 - "$f-rate.json" "$f-max.json" "$name" "$((after - before))" "$TICKS" <<'PY'
import json, sys
rate, mx, name, ticks, hz = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
p = {x["Percentile"]: x["Value"] * 1000 for x in rate["DurationHistogram"]["Percentiles"]}
n = mx["DurationHistogram"]["Count"]
cpu = ticks / hz
per_k = f"{cpu / n * 1000 * 1000:.0f}" if ticks and n else "n/a"
errors = sum(v for k, v in mx.get("RetCodes", {}).items() if str(k) not in ("200", "OK"))
print(f"| {name} | {p.get(50, 0):.2f} | {p.get(90, 0):.2f} | {p.get(99, 0):.2f} | {mx['ActualQPS']:.0f} | {per_k} | {errors} |")
PY
)")
}

echo "HTTPS: measuring (each ${DURATION} at ${QPS}/s, then unlimited)"
load "backend straight (plaintext)" "http://$BACKEND:8080/echo?size=1024" "" 
load "weft gateway (TLS, HTTP/1.1)" "https://$HOST:8443/echo?size=1024" "$gwpid" -cacert "$work/ca.crt" -resolve $GW
load "nginx (TLS, HTTP/1.1)" "https://$HOST:8443/echo?size=1024" "$ngxpid" -cacert "$work/ca.crt" -resolve $NGX
https_rows=("${results[@]}")
results=()
echo "TCP: measuring"
load "backend straight" "tcp://$BACKEND:8078" "" -payload-size 1024
load "weft gateway (TCP server)" "tcp://$GW:9000" "$gwpid" -payload-size 1024
load "haproxy (mode tcp)" "tcp://$HAP:9000" "$happid" -payload-size 1024
tcp_rows=("${results[@]}")

gwrss=$(awk '/VmRSS/{print $2}' /proc/$gwpid/status)
ngxrss=0; for q in $ngxpid $(pgrep -P $ngxpid || true); do ngxrss=$((ngxrss + $(awk '/VmRSS/{print $2}' /proc/$q/status))); done
haprss=$(awk '/VmRSS/{print $2}' /proc/$happid/status)

out=bench/results/gateway.md
{
	echo "# Gateway benchmarks"
	echo
	echo "\`bench/gateway.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores shared by the load generator, the"
	echo "proxies and the backend; $CONNS keep-alive connections, 1 KiB bodies (HTTPS) or 1 KiB echo"
	echo "payloads (TCP). Latency at $QPS requests/s for $DURATION; throughput and CPU with no rate limit"
	echo "for $DURATION (CPU: user+system time of the proxy's processes over the run, per 1,000"
	echo "requests). The backend is fortio's server."
	echo
	echo "## HTTPS at the edge (same certificate, same backend)"
	echo
	echo "| path | p50 ms | p90 ms | p99 ms | max req/s | proxy CPU ms / 1k req | non-200 |"
	echo "|---|---|---|---|---|---|---|"
	printf '%s\n' "${https_rows[@]}"
	echo
	echo "## TCP proxying (echo round trips)"
	echo
	echo "| path | p50 ms | p90 ms | p99 ms | max round trips/s | proxy CPU ms / 1k | errors |"
	echo "|---|---|---|---|---|---|---|"
	printf '%s\n' "${tcp_rows[@]}"
	echo
	echo "Resident memory at the end: weft gateway $((gwrss / 1024)) MiB, nginx (all processes) $((ngxrss / 1024)) MiB, haproxy $((haprss / 1024)) MiB."
} > "$out"
cat "$out"
