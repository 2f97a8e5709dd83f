// Package v1alpha1 is Weft's own security API, group security.weft.dev,
// version v1alpha1: resource kinds for features Istio's API has no
// resource for (OIDCLogin: login for human users at a gateway). The types
// are generated from oidclogin.proto (hack/protoc.sh); the control plane
// decodes and validates them as it does Istio's (internal/config).
package v1alpha1
