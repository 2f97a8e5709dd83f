// Package v1alpha1 is Weft's own networking API, group
// networking.weft.dev, version v1alpha1: resource kinds for features
// Istio's API has no resource for (RateLimit). The types are generated
// from ratelimit.proto (hack/protoc.sh); the control plane decodes and
// validates them as it does Istio's (internal/config).
package v1alpha1
