// Package charts holds Weft's Helm charts — weft (the control plane),
// weft-crds (Istio's CRDs) and weft-gateway — and their tests: helm lint,
// helm template with default and platform-team values, the rendered
// manifests applied with server-side dry-run to a real kube-apiserver
// (internal/testenv), the values schemas rejecting bad values, and the
// CRD copy matching the istio.io/api module in go.mod. The tests need helm
// (hack/tools.sh helm) and skip without it unless WEFT_REQUIRE_TOOLS=1.
package charts
