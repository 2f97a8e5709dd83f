#!/usr/bin/env bash
# hack/tools.sh builds the third-party tools that Weft's tests run against
# — a real kube-apiserver, a real Consul agent, helm for the charts,
# Jaeger for the tracing tests, h2spec for HTTP/2 conformance, and
# Envoy's rate limit service for the global rate limit tests —
# into a tool directory outside the product's go.mod. The product never
# depends on k8s.io/kubernetes, hashicorp/consul or helm; only tests run
# these binaries.
#
#   hack/tools.sh            build what is missing, print the directory
#   WEFT_TOOLS_DIR=DIR       where to build (default $HOME/.cache/weft-tools)
#
# What is already built is skipped (a stamp file records the version), so
# a warm run takes well under a second. `all` builds in two lanes at once
# (below). Cold, each alone on 2 cores: kube-apiserver
# about 13 minutes, consul about 6, helm about 4 (measured: 3m50s with an
# empty build cache, 2m36s with the product's build cache and a module
# download; both at load average 4-6), jaeger about 10 CPU-minutes
# (measured: 17m05s wall, 487 s user + 104 s system, with empty module and
# build caches at load average 6-16; about 5-6 minutes on 2 idle cores).
#
# etcd comes from Debian's etcd-server package (.ci/run installs it), and
# so does redis-server, the rate limit service's store. ratelimit: about
# 6 minutes cold (measured: 6 min with an empty module cache while
# consul built beside it).
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
CONSUL_VERSION=${CONSUL_VERSION:-v1.14.11}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
JAEGER_VERSION=${JAEGER_VERSION:-v1.76.0}
H2SPEC_VERSION=${H2SPEC_VERSION:-v2.2.1+incompatible}
# envoyproxy/ratelimit publishes no semver tags after v1.4.0 (2019): a
# pseudo-version of its main branch (2026-01-22), which builds with Go
# 1.26.
RATELIMIT_VERSION=${RATELIMIT_VERSION:-v1.4.1-0.20260122083618-3fb702589d36}
TOOLS=${WEFT_TOOLS_DIR:-$HOME/.cache/weft-tools}
mkdir -p "$TOOLS/bin" "$TOOLS/src"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local GOWORK=off

log() { printf '%s tools: %s\n' "$(date +%T)" "$*" >&2; }

built() { # built NAME VERSION: is bin/NAME built at VERSION?
  [ -x "$TOOLS/bin/$1" ] && [ "$(cat "$TOOLS/bin/$1.version" 2>/dev/null)" = "$2" ]
}

# modfield MODULE@VERSION FIELD: go mod download the module and print a
# field of its JSON (Dir, GoMod); on failure print go's error and fail.
modfield() {
  local out
  if ! out=$(cd "$TOOLS/src" && go mod download -json "$1" 2>&1); then
    log "go mod download $1 failed:"; printf '%s\n' "$out" >&2; return 1
  fi
  printf '%s\n' "$out" | sed -n "s/^[[:space:]]*\"$2\": \"\(.*\)\",\$/\1/p"
}

# moddir copies a module's files out of the read-only module cache into a
# writable build directory. Usage: moddir MODULE@VERSION DEST FILES...
moddir() {
  local mv=$1 dest=$2; shift 2
  local dir
  dir=$(modfield "$mv" Dir)
  [ -d "$dir" ] || { log "go mod download $mv gave no directory"; exit 1; }
  rm -rf "$dest"; mkdir -p "$dest"
  local f
  for f in "$@"; do cp -r "$dir/$f" "$dest/"; done
  chmod -R u+w "$dest"
}

build_kube_apiserver() {
  if built kube-apiserver "$KUBE_VERSION"; then return; fi
  log "building kube-apiserver $KUBE_VERSION (cold: ~13 min on 2 cores)"
  local src=$TOOLS/src/kubernetes
  moddir "k8s.io/kubernetes@$KUBE_VERSION" "$src" cmd pkg plugin third_party go.mod go.sum
  # The module points each k8s.io/X at ./staging/src/k8s.io/X, which the
  # module zip does not contain. Point them at the published staging
  # modules of the same release (v1.37.2 -> v0.37.2).
  local staging=v0${KUBE_VERSION#v1}
  sed -i -E "s#^([[:space:]]*k8s\.io/[a-z0-9-]+) => \./staging/src/k8s\.io/[a-z0-9-]+\$#\1 => \1 $staging#" "$src/go.mod"
  rm -f "$src/go.work" "$src/go.work.sum"
  local ver=${KUBE_VERSION#v} ldflags
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=${ver%%.*}"
  ldflags+=" -X k8s.io/component-base/version.gitMinor=$(echo "$ver" | cut -d. -f2)"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
  (cd "$src" && go build -trimpath -ldflags "$ldflags" -o "$TOOLS/bin/kube-apiserver.tmp" ./cmd/kube-apiserver)
  mv "$TOOLS/bin/kube-apiserver.tmp" "$TOOLS/bin/kube-apiserver"
  echo "$KUBE_VERSION" >"$TOOLS/bin/kube-apiserver.version"
  log "kube-apiserver built"
}

build_consul() {
  if built consul "$CONSUL_VERSION"; then return; fi
  log "building consul $CONSUL_VERSION (cold: ~6 min on 2 cores)"
  local src=$TOOLS/src/consul dir
  dir=$(modfield "github.com/hashicorp/consul@$CONSUL_VERSION" Dir)
  rm -rf "$src"; mkdir -p "$src"
  cp -r "$dir/." "$src/"; chmod -R u+w "$src"
  # Its ./api, ./sdk and ./proto-public nested modules are not in the
  # module zip: use the published versions its go.mod requires.
  sed -i -E '/^replace[[:space:]]+github\.com\/hashicorp\/consul\/(api|sdk|proto-public)[[:space:]]+=>/d' "$src/go.mod"
  sed -i -E '/^[[:space:]]*github\.com\/hashicorp\/consul\/(api|sdk|proto-public)[[:space:]]+=>[[:space:]]+\.\//d' "$src/go.mod"
  (cd "$src" && go build -trimpath -ldflags "-s -w -X github.com/hashicorp/consul/version.GitCommit=release" -o "$TOOLS/bin/consul.tmp" .)
  mv "$TOOLS/bin/consul.tmp" "$TOOLS/bin/consul"
  echo "$CONSUL_VERSION" >"$TOOLS/bin/consul.version"
  log "consul built"
}

# helm renders and lints charts/ in the chart tests (TestHelm*). It is
# built with `go install` from a directory outside the product module, so
# its dependencies never enter Weft's go.mod.
build_helm() {
  if built helm "$HELM_VERSION"; then return; fi
  log "building helm $HELM_VERSION (cold: ~4 min on 2 cores)"
  # As helm's Makefile does: its version, and the Kubernetes version that
  # `helm template` and `helm lint` assume (one past its client-go v0.X).
  local gomod minor ldflags
  gomod=$(modfield "helm.sh/helm/v3@$HELM_VERSION" GoMod)
  minor=$(sed -n -E 's#^[[:space:]]*k8s\.io/client-go v0\.([0-9]+)\..*#\1#p' "$gomod")
  [ -n "$minor" ] || { log "no k8s.io/client-go in helm's go.mod ($gomod)"; exit 1; }
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for p in pkg/chartutil pkg/lint/rules; do
    ldflags+=" -X helm.sh/helm/v3/$p.k8sVersionMajor=1 -X helm.sh/helm/v3/$p.k8sVersionMinor=$minor"
  done
  (cd "$TOOLS/src" && GOBIN="$TOOLS/bin" go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
  echo "$HELM_VERSION" >"$TOOLS/bin/helm.version"
  log "helm built"
}

# jaeger (all-in-one: OTLP receiver, memory store, HTTP query API) receives
# the proxies' spans in the tracing e2e tests (TestObservabilityTracing*).
# It is a Go tool of its own module under src/, so neither its go.mod nor
# its ~400 dependencies touch Weft's. The web UI assets are not in the Go
# module; the tests use only the query API (/api/traces).
build_jaeger() {
  if built jaeger "$JAEGER_VERSION"; then return; fi
  log "building jaeger $JAEGER_VERSION (cold: ~12 CPU-minutes)"
  # A directory of its own, not under $TOOLS/src: another run of this
  # script removes $TOOLS/src when it ends.
  local src
  src=$(mktemp -d "${TMPDIR:-/tmp}/weft-jaeger.XXXXXX")
  (cd "$src" && go mod init weft.dev/tools/jaeger >/dev/null 2>&1 &&
    go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION" &&
    go build -trimpath -ldflags "-s -w" -o "$TOOLS/bin/jaeger.tmp" github.com/jaegertracing/jaeger/cmd/jaeger) ||
    { rm -rf "$src"; exit 1; }
  rm -rf "$src"
  mv "$TOOLS/bin/jaeger.tmp" "$TOOLS/bin/jaeger"
  echo "$JAEGER_VERSION" >"$TOOLS/bin/jaeger.version"
  log "jaeger built"
}

# h2spec, the HTTP/2 conformance suite, runs against the proxy's
# listeners (TestH2Spec). A small Go tool (about 25 s cold). It has no
# go.mod, so it is built in a module of its own with its dependencies
# pinned (the versions of 2026-12-02): `go install` alone would take
# their newest versions, which may one day need a newer Go.
build_h2spec() {
  if built h2spec "$H2SPEC_VERSION"; then return; fi
  log "building h2spec $H2SPEC_VERSION"
  local src
  src=$(mktemp -d "${TMPDIR:-/tmp}/weft-h2spec.XXXXXX")
  (cd "$src" && go mod init weft.dev/tools/h2spec >/dev/null 2>&1 &&
    go get -tool "github.com/summerwind/h2spec/cmd/h2spec@$H2SPEC_VERSION" \
      github.com/fatih/color@v1.19.0 github.com/mattn/go-colorable@v0.1.14 github.com/mattn/go-isatty@v0.0.20 \
      github.com/spf13/cobra@v1.10.2 github.com/spf13/pflag@v1.0.9 \
      golang.org/x/net@v0.63.0 golang.org/x/sys@v0.50.0 golang.org/x/text@v0.44.0 &&
    go build -trimpath -ldflags "-s -w" -o "$TOOLS/bin/h2spec.tmp" github.com/summerwind/h2spec/cmd/h2spec) ||
    { rm -rf "$src"; exit 1; }
  rm -rf "$src"
  mv "$TOOLS/bin/h2spec.tmp" "$TOOLS/bin/h2spec"
  echo "$H2SPEC_VERSION" >"$TOOLS/bin/h2spec.version"
  log "h2spec built"
}

# ratelimit (github.com/envoyproxy/ratelimit's service_cmd) is the
# reference envoy.service.ratelimit.v3 server the global rate limit tests
# (TestRateLimitGlobal*, testenv.RateLimit) run against, with Redis. A Go
# tool of its own module, as jaeger.
build_ratelimit() {
  if built ratelimit "$RATELIMIT_VERSION"; then return; fi
  log "building ratelimit $RATELIMIT_VERSION (cold: ~6 min on 2 cores)"
  local src
  src=$(mktemp -d "${TMPDIR:-/tmp}/weft-ratelimit.XXXXXX")
  (cd "$src" && go mod init weft.dev/tools/ratelimit >/dev/null 2>&1 &&
    go get -tool "github.com/envoyproxy/ratelimit/src/service_cmd@$RATELIMIT_VERSION" &&
    go build -trimpath -ldflags "-s -w" -o "$TOOLS/bin/ratelimit.tmp" github.com/envoyproxy/ratelimit/src/service_cmd) ||
    { rm -rf "$src"; exit 1; }
  rm -rf "$src"
  mv "$TOOLS/bin/ratelimit.tmp" "$TOOLS/bin/ratelimit"
  echo "$RATELIMIT_VERSION" >"$TOOLS/bin/ratelimit.version"
  log "ratelimit built"
}

check_etcd() {
  if command -v etcd >/dev/null; then ln -sf "$(command -v etcd)" "$TOOLS/bin/etcd"; return; fi
  log "etcd is missing: apt-get install -y etcd-server"
  return 1
}

# lane NAME STEP...: run the build steps one after another in the
# background, each output line prefixed with the lane's name.
lane() {
  local name=$1; shift
  (
    set -o pipefail
    { for step in "$@"; do "$step"; done; } 2>&1 | sed -u "s/^/[$name] /" >&2
  ) &
}

# all builds in two lanes at once. Each `go build` already uses both
# cores while it compiles, but a cold build also waits: on module
# downloads, on its link (one core), on the last few packages of its
# dependency graph. Two lanes fill those waits with the other lane's work
# (kube-apiserver alone is as long as the rest together).
build_all() {
  check_etcd
  local pids=() pid rc=0
  lane kube build_kube_apiserver build_h2spec build_ratelimit; pids+=($!)
  lane rest build_helm build_consul build_jaeger; pids+=($!)
  for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
  [ "$rc" = 0 ] || { log "a tool failed to build (see above)"; exit 1; }
}

what=${1:-all}
case $what in
  all) build_all ;;
  kube-apiserver) build_kube_apiserver ;;
  consul) build_consul ;;
  helm) build_helm ;;
  jaeger) build_jaeger ;;
  h2spec) build_h2spec ;;
  ratelimit) build_ratelimit ;;
  etcd) check_etcd ;;
  *) echo "usage: $0 [all|kube-apiserver|consul|helm|jaeger|h2spec|ratelimit|etcd]" >&2; exit 2 ;;
esac
rm -rf "$TOOLS/src" # sources are only needed while building
echo "$TOOLS"
