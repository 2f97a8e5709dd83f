// Package xdsload measures the control plane under the load of a large
// mesh: it writes a generated mesh (services × endpoints, with
// VirtualServices and DestinationRules) as Istio YAML for `weft serve
// --config`, connects many simulated proxies over real ADS streams (delta,
// as weft-proxy by default, or state of the world), each with its own
// identity, namespace and labels and ACKing as weft-proxy does, then times config and endpoint changes until every proxy has
// ACKed them and counts what was pushed, with the control plane's CPU and
// memory read from /proc. bench/xdsload is its command line.
package xdsload
