#!/usr/bin/env bash
# Maximum throughput of one proxy pinned to one core: keep-alive HTTP/1.1,
# small responses (1 KiB) from a fast upstream (nginx serving a static
# file), side by side in one run for a Weft sidecar (its outbound
# listener), nginx, haproxy, Caddy (a Go peer), bench/minproxy (the
# least a net/http reverse proxy does) and bench/evproxy twice (the least
# a Go reverse proxy does: a goroutine per connection as Weft, "lean", and
# one epoll loop as nginx, "lean-loop"), each a reverse proxy
# with keep-alive to the upstream. Reports requests per second per core,
# the proxy's CPU per request and its resident memory, with ratios to
# nginx. Everything runs on 127.0.22.0/24 and stops by itself.
#
# CPUs: the proxy under test runs alone on CPU 1 (taskset; Go sees one CPU,
# so GOMAXPROCS is 1, as for nginx's and haproxy's single worker); wrk, the
# upstream nginx and Weft's control plane share CPU 0. On a 2-core machine
# CPU 0 can be the bottleneck for the fastest proxies: the table says how
# busy the proxy's core was, so a proxy below ~95% was not the limit.
#
#   bench/throughput.sh                  # 3 rounds × 10 s per proxy
#   DURATION=20s ROUNDS=5 CONNS=64 bench/throughput.sh
#
# Needs: wrk, nginx, haproxy (Debian: apt-get install -y wrk nginx-light
# haproxy); Caddy is built once into $WEFT_TOOLS_DIR/bench (go install
# github.com/caddyserver/caddy/v2/cmd/caddy@v2.11.9, a few minutes; not the
# product's go.mod) unless CADDY names one or SKIP_CADDY=1. Writes
# bench/results/throughput.md and a CPU profile of the Weft sidecar in its
# last round, bench/results/throughput-weft-cpu.pprof, with the allocations
# of that round (throughput-weft-allocs.pprof: the allocs profile's delta
# over the round; go tool pprof -sample_index=alloc_space). With strace it then
# counts each proxy's system calls per request in one more round; STRACE=
# turns that off.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
TOOLS=${WEFT_TOOLS_DIR:-$HOME/.cache/weft-tools}
WRK=${WRK:-$(command -v wrk || echo /usr/bin/wrk)}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
HAPROXY=${HAPROXY:-$(command -v haproxy || echo /usr/sbin/haproxy)}
for b in "$WRK" "$NGINX" "$HAPROXY"; do
  [ -x "$b" ] || { echo "$b not found: apt-get install -y wrk nginx-light haproxy" >&2; exit 1; }
done
CADDY=${CADDY:-$TOOLS/bench/caddy}
if [ "${SKIP_CADDY:-0}" != 1 ] && [ ! -x "$CADDY" ]; then
  echo "building Caddy v2.11.9 into $TOOLS/bench (once)"
  mkdir -p "$TOOLS/bench"
  (cd /tmp && GOBIN="$TOOLS/bench" GOFLAGS=-mod=mod go install github.com/caddyserver/caddy/v2/cmd/caddy@v2.11.9)
fi

work=$(mktemp -d /tmp/weft-throughput.XXXXXX)
chmod 755 "$work" # nginx's workers (www-data) read the body there
pids=()
cleanup() { for ((i=${#pids[@]}-1; i>=0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

echo "building weft and weft-proxy"
go build -o "$work/weft" ./cmd/weft
CGO_ENABLED=0 go build -trimpath -tags grpcnotrace -ldflags "-s -w" -o "$work/weft-proxy" ./cmd/weft-proxy # as docs/proxy.md builds it
go build -o "$work/minproxy" ./bench/minproxy
go build -o "$work/evproxy" ./bench/evproxy

UP=127.0.22.2 CP=127.0.22.9 SIDECAR=127.0.22.1 NGX=127.0.22.3 HAP=127.0.22.4 CAD=127.0.22.5 MIN=127.0.22.6 LEAN=127.0.22.7 LOOP=127.0.22.8
# taskset execs the command: $! is the process itself (a shell function
# in the background would be a subshell that kill does not reach).
on_load="taskset -c $LOAD_CPU"
on_proxy="taskset -c $PROXY_CPU"

# The upstream: nginx serving a static 1 KiB body, keep-alive.
head -c 1024 /dev/zero | tr '\0' 'x' > "$work/body"
cat > "$work/upstream.conf" <<NGX
worker_processes 1;
daemon off;
pid $work/upstream.pid;
error_log $work/upstream-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen $UP:8080; location / { root $work; try_files /body =404; } }
}
NGX
$on_load "$NGINX" -c "$work/upstream.conf" -p "$work" >/dev/null 2>&1 & pids+=($!)

# Weft: the control plane (plaintext xDS) and a sidecar whose outbound
# listener routes Host: up to the upstream.
mkdir -p "$work/config"
cat > "$work/config/up.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: up, namespace: default}
spec:
  hosts: [up.default.svc.cluster.local]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: $UP}]
YAML
$on_load "$work/weft" serve --config "$work/config" --xds-address $CP:15012 --xds-plaintext-address $CP:15010 --status-address $CP:15014 --log-level warn & pids+=($!)
for i in $(seq 1 50); do curl -fsS -o /dev/null http://$CP:15014/status && break; sleep 0.1; done
$on_proxy "$work/weft-proxy" --xds-plaintext --xds-address $CP:15010 --workload bench-client --labels app=client,version=v1 \
  --ip $SIDECAR --outbound $SIDECAR:15001 --admin-address $SIDECAR:15000 --log-level warn & weft_pid=$!; pids+=($!)

cat > "$work/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream up { server $UP:8080; keepalive 128; }
  server {
    listen $NGX:8080;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGX
$on_proxy "$NGINX" -c "$work/nginx.conf" -p "$work" >/dev/null 2>&1 & nginx_pid=$!; pids+=($!)

cat > "$work/haproxy.cfg" <<HAP
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend f
  bind $HAP:8080
  default_backend b
backend b
  server up $UP:8080
HAP
$on_proxy "$HAPROXY" -f "$work/haproxy.cfg" -db >/dev/null 2>&1 & haproxy_pid=$!; pids+=($!)

caddy_pid=
if [ "${SKIP_CADDY:-0}" != 1 ]; then
  cat > "$work/Caddyfile" <<CAD
{
  admin off
  auto_https off
  log {
    output discard
  }
}
:8080 {
  bind $CAD
  reverse_proxy $UP:8080
}
CAD
  XDG_DATA_HOME=$work XDG_CONFIG_HOME=$work $on_proxy "$CADDY" run --config "$work/Caddyfile" --adapter caddyfile >"$work/caddy.log" 2>&1 & caddy_pid=$!; pids+=($!)
fi

$on_proxy "$work/minproxy" -listen $MIN:8080 -upstream $UP:8080 & min_pid=$!; pids+=($!)
$on_proxy "$work/evproxy" -model goroutines -listen $LEAN:8080 -upstream $UP:8080 & lean_pid=$!; pids+=($!)
$on_proxy "$work/evproxy" -model netpoll -listen $LOOP:8080 -upstream $UP:8080 & loop_pid=$!; pids+=($!)

# Ready: the proxy answers with the upstream's 1 KiB body (not a page of
# its own: Caddy answers an empty 200 for a host no site matches).
ready() { [ "$(curl -fs -H "Host: ${2:-x}" "$1" | wc -c)" = 1024 ]; }
for i in $(seq 1 100); do
  if ready "http://$SIDECAR:15001/" up && ready "http://$NGX:8080/" && ready "http://$HAP:8080/" && ready "http://$MIN:8080/" \
     && ready "http://$LEAN:8080/" && ready "http://$LOOP:8080/" \
     && { [ -z "$caddy_pid" ] || ready "http://$CAD:8080/"; }; then break; fi
  sleep 0.1
  [ "$i" = 100 ] && { echo "the proxies did not come up" >&2; for f in "$work"/*.log; do echo "== $f" >&2; tail -n 5 "$f" >&2; done; exit 1; }
done

tree() { echo "$1"; pgrep -P "$1" || true; }
cpu_ticks() { local t=0; for p in $(tree "$1"); do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }
rss_kb() { local t=0; for p in $(tree "$1"); do t=$((t + $(awk '/VmRSS/ {print $2}' "/proc/$p/status"))); done; echo $t; }
hz=$(getconf CLK_TCK)
secs=${DURATION%s}

# load NAME URL PID HOST: one wrk run; prints "rps cpu_ticks non2xx".
load() {
  local c0 out rps c1 errs
  c0=$(cpu_ticks "$3")
  out=$($on_load "$WRK" -t1 -c"$CONNS" -d"$DURATION" -H "Host: $4" "$2")
  c1=$(cpu_ticks "$3")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  errs=$(awk '/Non-2xx/ {print $NF} /Socket errors/ {e=1} END {}' <<<"$out")
  echo "$rps $((c1 - c0)) ${errs:-0}"
}

declare -A best cpu busy rss persec
STRACE=${STRACE-$(command -v strace || true)}
names=(weft nginx haproxy minproxy lean lean-loop)
[ -n "$caddy_pid" ] && names+=(caddy)
url() { case $1 in weft) echo "http://$SIDECAR:15001/";; nginx) echo "http://$NGX:8080/";; haproxy) echo "http://$HAP:8080/";; caddy) echo "http://$CAD:8080/";; minproxy) echo "http://$MIN:8080/";; lean) echo "http://$LEAN:8080/";; lean-loop) echo "http://$LOOP:8080/";; esac; }
pid() { case $1 in weft) echo $weft_pid;; nginx) echo $nginx_pid;; haproxy) echo $haproxy_pid;; caddy) echo $caddy_pid;; minproxy) echo $min_pid;; lean) echo $lean_pid;; lean-loop) echo $loop_pid;; esac; }
host() { case $1 in weft) echo up;; *) echo x;; esac; }

echo "warming up"
for n in "${names[@]}"; do $on_load "$WRK" -t1 -c"$CONNS" -d2s -H "Host: $(host $n)" "$(url $n)" >/dev/null; done
for r in $(seq 1 "$ROUNDS"); do
  for n in "${names[@]}"; do
    window=$(( ${secs%.*} > 2 ? ${secs%.*} - 2 : 1 ))
    if [ "$n" = weft ] && [ "$r" = "$ROUNDS" ]; then
      # A CPU profile of the sidecar during its last round, kept with the
      # results, and its allocations (the heap profiler is off by default).
      curl -fsS -o /dev/null -X POST "http://$SIDECAR:15000/heapprofiler?enable=y"
      curl -fsS -o bench/results/throughput-weft-cpu.pprof "http://$SIDECAR:15000/debug/pprof/profile?seconds=$window" &
      curl -fsS -o bench/results/throughput-weft-allocs.pprof "http://$SIDECAR:15000/debug/pprof/allocs?seconds=$window" &
    fi
    read -r rps ticks errs < <(load "$n" "$(url $n)" "$(pid $n)" "$(host $n)")
    echo "round $r: $n ${rps} req/s, proxy CPU $(awk -v t="$ticks" -v h="$hz" -v s="$secs" 'BEGIN{printf "%.0f%%", 100*t/h/s}'), non-2xx ${errs}"
    if [ -z "${best[$n]:-}" ] || awk -v a="$rps" -v b="${best[$n]}" 'BEGIN{exit !(a>b)}'; then
      best[$n]=$rps
      cpu[$n]=$(awk -v t="$ticks" -v h="$hz" -v r="$rps" -v s="$secs" 'BEGIN{printf "%.1f", 1e6*t/h/(r*s)}')
      busy[$n]=$(awk -v t="$ticks" -v h="$hz" -v s="$secs" 'BEGIN{printf "%.0f", 100*t/h/s}')
    fi
  done
done
for n in "${names[@]}"; do rss[$n]=$(rss_kb "$(pid $n)"); done

# One more round per proxy, not measured for speed: strace -f counts the
# system calls of every thread (new ones too) of the proxy's processes.
# It slows the proxy; the counts are divided by the requests wrk got
# answered in that round.
if [ -n "$STRACE" ]; then
  for n in "${names[@]}"; do
    args=()
    for p in $(tree "$(pid $n)"); do args+=(-p "$p"); done
    "$STRACE" -f -c -o "$work/strace-$n.txt" "${args[@]}" 2>/dev/null & st=$!
    sleep 1
    out=$($on_load "$WRK" -t1 -c"$CONNS" -d"$DURATION" -H "Host: $(host $n)" "$(url $n)")
    kill -INT "$st" 2>/dev/null || true
    wait "$st" 2>/dev/null || true
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    persec[$n]=$(awk -v q="$reqs" '
      $NF ~ /^(write|writev|sendto|sendmsg)$/ { wr += $4 }
      $NF ~ /^(read|readv|recvfrom|recvmsg)$/ { rd += $4 }
      $NF ~ /^epoll_(wait|pwait|pwait2)$/ { ep += $4 }
      $NF == "futex" { fx += $4 }
      $NF == "total" { all = $4 }
      END { printf "%.2f %.2f %.2f %.2f %.2f", all/q, wr/q, rd/q, ep/q, fx/q }' "$work/strace-$n.txt")
  done
fi

out=bench/results/throughput.md
{
  echo "# One proxy pinned to one core: maximum throughput ($(date -u +%F))"
  echo
  echo "\`bench/throughput.sh\`: wrk -t1 -c$CONNS, $ROUNDS rounds × $DURATION per proxy (the best round kept),"
  echo "keep-alive HTTP/1.1, 1 KiB responses from nginx serving a static file; the proxy on CPU $PROXY_CPU alone,"
  echo "wrk, the upstream and the control plane on CPU $LOAD_CPU. $(nproc) CPUs, $(uname -r)."
  echo "Versions: $("$NGINX" -v 2>&1 | sed 's/.*: //'), $("$HAPROXY" -v 2>&1 | head -1 | awk '{print "haproxy " $3}')$([ -n "$caddy_pid" ] && echo ", caddy v2.11.9"), weft $(git rev-parse --short HEAD)."
  echo
  echo "| proxy | requests/s per core | vs nginx | proxy CPU per request | proxy core busy | RSS after |"
  echo "|---|---|---|---|---|---|"
  for n in "${names[@]}"; do
    printf '| %s | %.0f | %.2f× | %s µs | %s%% | %.1f MiB |\n' "$n" "${best[$n]}" \
      "$(awk -v a="${best[$n]}" -v b="${best[nginx]}" 'BEGIN{print a/b}')" "${cpu[$n]}" "${busy[$n]}" "$(awk -v k="${rss[$n]}" 'BEGIN{print k/1024}')"
  done
  if [ -n "$STRACE" ]; then
    echo
    echo "System calls per request, counted in one more round per proxy under strace -f -c (all threads; slowed, so not a speed round):"
    echo
    echo "| proxy | all | write/writev/sendto/sendmsg | read/readv/recvfrom/recvmsg | epoll_wait/epoll_pwait | futex |"
    echo "|---|---|---|---|---|---|"
    for n in "${names[@]}"; do
      read -r a w rd ep fx <<<"${persec[$n]:-- - - - -}"
      echo "| $n | $a | $w | $rd | $ep | $fx |"
    done
  fi
} > "$out"
cat "$out"
