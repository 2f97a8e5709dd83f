#!/usr/bin/env bash
# hack/update-crds.sh copies Istio's CRDs from the istio.io/api module in
# go.mod into charts/weft-crds/files/istio-crds.gen.yaml (verbatim, under a
# header naming the version) and sets the chart's appVersion to it. Run it
# after bumping istio.io/api; TestHelmCRDsMatchIstioAPI says when.
set -euo pipefail
cd "$(dirname "$0")/.."
read -r dir ver < <(go list -m -f '{{.Dir}} {{.Version}}' istio.io/api)
out=charts/weft-crds/files/istio-crds.gen.yaml
{
  cat <<HDR
# Istio's CustomResourceDefinitions, copied verbatim from
#   istio.io/api $ver, kubernetes/customresourcedefinitions.gen.yaml
#   (https://github.com/istio/api, Apache License 2.0, Copyright Istio Authors).
# Everything below the marker line is that file, byte for byte:
# charts/charts_test.go (TestHelmCRDsMatchIstioAPI) fails when the istio.io/api
# in go.mod differs; refresh this file with hack/update-crds.sh.
# ---- verbatim copy of istio.io/api follows ----
HDR
  cat "$dir/kubernetes/customresourcedefinitions.gen.yaml"
} >"$out.tmp"
mv "$out.tmp" "$out"
cp "$dir/LICENSE" charts/weft-crds/files/LICENSE.istio-api
chmod u+w charts/weft-crds/files/*
sed -i -E "s/^appVersion: .*/appVersion: \"${ver#v}\"/" charts/weft-crds/Chart.yaml
echo "charts/weft-crds: istio.io/api $ver"
