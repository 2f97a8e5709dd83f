#!/usr/bin/env bash
# Start-up of a sidecar that holds a generated 1,000-service mesh
# (bench/meshgen): how long from exec until its /ready answers, the CPU
# it spent by 3 s after start, and its private (anonymous) memory then.
# Each build given is started ROUNDS times, builds alternating, against
# one `weft serve` (warmed by a first connection that is not counted).
#
#   bench/startup.sh /tmp/weft-proxy.old /tmp/weft-proxy.new
#   ROUNDS=5 SERVICES=2000 bench/startup.sh /tmp/weft-proxy
#
# With no build given it builds weft-proxy as docs/proxy.md does.
# Everything runs on 127.0.22.0/24 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SERVICES=${SERVICES:-1000}

work=$(mktemp -d /tmp/weft-startup.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

go build -o "$work/weft" ./cmd/weft
bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then
  CGO_ENABLED=0 go build -trimpath -tags grpcnotrace -ldflags "-s -w" -o "$work/weft-proxy" ./cmd/weft-proxy
  bins=("$work/weft-proxy")
fi

CP=127.0.22.10 MESH=127.0.22.3 APP=127.0.22.1
mkdir -p "$work/mesh"
cat > "$work/mesh/bench.yaml" <<YAML
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
metadata: {name: bench-mesh, namespace: default}
spec:
  address: $MESH
  ports: {http: 8080}
  labels: {app: bench, version: v1}
YAML
go run ./bench/meshgen -dir "$work/mesh" -services "$SERVICES" -endpoints 1 -spare 1 >/dev/null
"$work/weft" serve --config "$work/mesh" --xds-address $CP:15012 --xds-plaintext-address $CP:15010 \
  --status-address $CP:15014 --log-level error & pids+=($!)
for _ in $(seq 1 100); do curl -fs -o /dev/null http://$CP:15014/status && break; sleep 0.2; done

tck=$(getconf CLK_TCK)
# start BIN: one sidecar's start-up; prints "ms-to-ready cpu-ms anon-KiB".
start() {
  local t0 t1 p ut st anon
  t0=$(date +%s%N)
  "$1" --xds-plaintext --xds-address $CP:15010 --workload bench-mesh --labels app=bench,version=v1 \
    --ip $MESH --outbound $MESH:15001 --app-port 8080=$APP:18080 --admin-address $MESH:15000 --log-level warn & p=$!
  for _ in $(seq 1 1000); do curl -fs -o /dev/null http://$MESH:15000/ready && break; sleep 0.01; done
  t1=$(date +%s%N)
  sleep 3
  read -r ut st < <(awk '{print $14, $15}' "/proc/$p/stat")
  anon=$(awk '/^Anonymous/{print $2}' "/proc/$p/smaps_rollup")
  kill "$p"; wait "$p" 2>/dev/null || true
  echo "$(( (t1 - t0) / 1000000 )) $(( (ut + st) * 1000 / tck )) $anon"
}
start "${bins[0]}" >/dev/null # the control plane builds its first snapshot for this node

echo "| build | round | ready ms | CPU ms by 3 s | private KiB at 3 s |"
echo "|---|---|---|---|---|"
for r in $(seq 1 "$ROUNDS"); do
  for b in "${bins[@]}"; do
    read -r ms cpu anon < <(start "$b")
    echo "| $b | $r | $ms | $cpu | $anon |"
  done
done
