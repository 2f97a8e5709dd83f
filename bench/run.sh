#!/usr/bin/env bash
# Latency and footprint of one and two Weft sidecar hops, plaintext and
# with mutual TLS between the sidecars, side by side in one run against a
# direct connection and nginx (Debian): one nginx hop, two nginx processes,
# and two nginx processes with mutual TLS between them. Constant 1,000 requests/s over 16 HTTP/1.1 keep-alive connections,
# 1 KiB response bodies (fortio). Everything runs on 127.0.20.0/24 and stops
# by itself.
#
#   bench/run.sh                 # 20 s per scenario
#   DURATION=60s QPS=2000 bench/run.sh
#
# Needs: fortio (go install fortio.org/fortio@v1.63.0), nginx (apt-get
# install nginx-light). Writes bench/results/latest.md.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-20s}
QPS=${QPS:-1000}
CONNS=${CONNS:-16}
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

echo "building weft and weft-proxy"
go build -o "$work/weft" ./cmd/weft
go build -o "$work/weft-proxy" ./cmd/weft-proxy

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
  ports: {http: 8080}
  labels: {app: bench, version: v1}
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
env ${PROXY_ENV:-} "$work/weft-proxy" --xds-plaintext --xds-address 127.0.20.9:15010 --workload bench-server --labels app=bench,version=v1 \
  --ip $SERVER --outbound "" --app-port 8080=$SERVER:18080 --admin-address $SERVER:15000 --log-level warn & server_proxy=$!; pids+=($!)
env ${PROXY_ENV:-} "$work/weft-proxy" --xds-plaintext --xds-address 127.0.20.9:15010 --workload bench-client --labels app=client,version=v1 \
  --ip $CLIENT --outbound $CLIENT:15001 --admin-address $CLIENT:15000 --log-level warn & client_proxy=$!; pids+=($!)

# The mutual-TLS pair: sidecars on the secure port, each with a bootstrap
# token for its service account; the server shares the echo app.
"$work/weft" token --control-plane 127.0.20.9:15014 --namespace default --service-account bench-mtls-server \
  --root-cert-out "$work/root.pem" > "$work/server.token"
"$work/weft" token --control-plane 127.0.20.9:15014 --namespace default --service-account bench-mtls-client > "$work/client.token"
env ${PROXY_ENV:-} "$work/weft-proxy" --xds-address 127.0.20.9:15012 --root-cert "$work/root.pem" --token-file "$work/server.token" \
  --workload bench-mtls-server --service-account bench-mtls-server --labels app=bench-mtls,version=v1 \
  --ip $MTLS_SERVER --outbound "" --app-port 8080=$SERVER:18080 --admin-address $MTLS_SERVER:15000 --log-level warn & mtls_server_proxy=$!; pids+=($!)
env ${PROXY_ENV:-} "$work/weft-proxy" --xds-address 127.0.20.9:15012 --root-cert "$work/root.pem" --token-file "$work/client.token" \
  --workload bench-mtls-client --service-account bench-mtls-client --labels app=client,version=v1 \
  --ip $MTLS_CLIENT --outbound $MTLS_CLIENT:15001 --admin-address $MTLS_CLIENT:15000 --log-level warn & mtls_client_proxy=$!; pids+=($!)

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

# Wait until both sidecars are ready and the two-hop path answers.
for i in $(seq 1 100); do
  if curl -fsS -o /dev/null http://$SERVER:15000/ready && curl -fsS -o /dev/null http://$CLIENT:15000/ready \
     && curl -fsS -o /dev/null -H 'Host: bench' "http://$CLIENT:15001/" && curl -fsS -o /dev/null "http://$NGINX2IP:8080/" \
     && curl -fsS -o /dev/null -H 'Host: bench-mtls' "http://$MTLS_CLIENT:15001/" && curl -fsS -o /dev/null "http://$NGINX_TLS_FRONT:8080/"; then break; fi
  sleep 0.1
  [ "$i" = 100 ] && { echo "mesh did not come up" >&2; exit 1; }
done

# CPU and memory of a process and its children (nginx's master + worker).
tree() { echo "$1"; pgrep -P "$1" || true; }
cpu_ticks() { local t=0; for p in $(tree "$1"); do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }
rss_kb() { local t=0; for p in $(tree "$1"); do t=$((t + $(awk '/VmRSS/ {print $2}' "/proc/$p/status"))); done; echo $t; }
hz=$(getconf CLK_TCK)

run() { # name url host [pids of the proxies on the path]
  local name=$1 url=$2 host=$3; shift 3
  local pids=("$@") t0=0 t1=0 p
  for p in "${pids[@]}"; do t0=$((t0 + $(cpu_ticks "$p"))); done
  "$FORTIO" load -quiet -qps "$QPS" -c "$CONNS" -t "$DURATION" -H "Host: $host" -json "$work/$name.json" "$url" >/dev/null 2>&1
  local cpu="-" rss="-"
  if [ ${#pids[@]} -gt 0 ]; then
    for p in "${pids[@]}"; do t1=$((t1 + $(cpu_ticks "$p"))); done
    cpu=$(awk -v d=$((t1 - t0)) -v hz="$hz" -v dur="${DURATION%s}" -v qps="$QPS" 'BEGIN{printf "%.1f%% (%.0f us/req)", 100*d/hz/dur, 1e6*d/hz/dur/qps}')
    rss=""
    for p in "${pids[@]}"; do rss="$rss$(awk -v k="$(rss_kb "$p")" 'BEGIN{printf "%.1f", k/1024}') MB "; done
  fi
  python3 - "$work/$name.json" "$name" "$cpu" "$rss" >> "$work/rows" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
h = d["DurationHistogram"]
p = {x["Percentile"]: x["Value"] * 1000 for x in h["Percentiles"]}
codes = d.get("RetCodes", {})
ok = codes.get("200", 0)
print(f'{sys.argv[2]}\t{p.get(50,0):.3f}\t{p.get(90,0):.3f}\t{p.get(99,0):.3f}\t{d["ActualQPS"]:.0f}\t{ok}/{h["Count"]}\t{sys.argv[3]}\t{sys.argv[4].strip()}')
PY
}

: > "$work/rows"
echo "running scenarios: $DURATION each at $QPS rps over $CONNS connections"
run direct   "http://$SERVER:18080/?size=1024" bench
run nginx    "http://$NGINXIP:8080/?size=1024" bench "$nginx_pid"
run one-hop  "http://$SERVER:8080/?size=1024"  bench "$server_proxy"
run two-hops "http://$CLIENT:15001/?size=1024" bench "$client_proxy" "$server_proxy"
run nginx-two-hops "http://$NGINX2IP:8080/?size=1024" bench "$nginx2_pid" "$nginx_pid"
run two-hops-mtls "http://$MTLS_CLIENT:15001/?size=1024" bench-mtls "$mtls_client_proxy" "$mtls_server_proxy"
run nginx-two-hops-tls "http://$NGINX_TLS_FRONT:8080/?size=1024" bench "$nginx_tls_front_pid" "$nginx_tls_back_pid"

python3 - "$work/rows" "$DURATION" "$QPS" "$CONNS" > bench/results/latest.md <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
by = {r[0]: r for r in rows}
d = by["direct"]
print(f"# Proxy latency, {sys.argv[2]} per scenario, {sys.argv[3]} rps, {sys.argv[4]} connections, 1 KiB bodies\n")
print("| scenario | p50 ms | p90 ms | p99 ms | added p50 | added p99 | rps | 200s | proxy CPU (all hops) | proxy RSS (each) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    a50, a99 = float(r[1]) - float(d[1]), float(r[3]) - float(d[3])
    print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {a50:+.3f} ms | {a99:+.3f} ms | {r[4]} | {r[5]} | {r[6]} | {r[7]} |")
def compare(label, weft, peer):
    w, n = by.get(weft), by.get(peer)
    if not (w and n):
        return
    def ratio(i):
        dn = float(n[i]) - float(d[i])
        return f"{(float(w[i]) - float(d[i])) / dn:.1f}x" if dn > 0.005 else "n/a (peer added < 5 us)"
    print(f"{label}, added latency Weft/nginx: p50 {ratio(1)}, p99 {ratio(3)}")
print()
compare("one hop", "one-hop", "nginx")
compare("two hops", "two-hops", "nginx-two-hops")
compare("two mutual-TLS hops", "two-hops-mtls", "nginx-two-hops-tls")
def cpu(name):
    r = by.get(name)
    if not r or "us/req" not in r[6]:
        return None
    return float(r[6].split("(")[1].split(" us/req")[0])
pt, mt, nt, nmt = cpu("two-hops"), cpu("two-hops-mtls"), cpu("nginx-two-hops"), cpu("nginx-two-hops-tls")
if pt and mt:
    print(f"mutual TLS, CPU per request over plaintext (two hops, kept-alive connections): Weft {100*(mt-pt)/pt:+.0f}%", end="")
    if nt and nmt:
        print(f", nginx {100*(nmt-nt)/nt:+.0f}%", end="")
    print()
if mt and nmt:
    print(f"two mutual-TLS hops, CPU per request Weft/nginx: {mt/nmt:.1f}x")
PY
cat bench/results/latest.md
