#!/usr/bin/env bash
# Regenerates the Go code of Weft's own API protos (api/...). Needs protoc
# (Debian: protobuf-compiler); protoc-gen-go is built from the module's own
# google.golang.org/protobuf version, and Istio's protos come from the
# istio.io/api module, so the generated code matches go.mod.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
GOBIN=$bin go install google.golang.org/protobuf/cmd/protoc-gen-go
istio=$(go list -m -f '{{.Dir}}' istio.io/api)
for f in api/*/v1alpha1/*.proto; do
	protoc --plugin=protoc-gen-go="$bin/protoc-gen-go" \
		-I . -I "$istio" -I "$istio/common-protos" \
		--go_out=. --go_opt=module=weft.dev/weft \
		--go_opt=Mgoogle/protobuf/duration.proto=google.golang.org/protobuf/types/known/durationpb "$f"
done
