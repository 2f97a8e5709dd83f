// Package xdsload measures the control plane under the load of a large
// mesh: it writes a generated mesh (services × endpoints, with
// VirtualServices and DestinationRules) as Istio YAML for `weft serve
// --config`, connects many simulated proxies over real ADS streams (delta,
// as weft-proxy by default, or state of the world), each with its own
// identity, namespace and labels and ACKing as weft-proxy does, then
// times config and endpoint changes until every proxy has received and
// ACKed them and counts what was pushed, with the control plane's CPU and
// memory read from /proc. The simulated proxies read only the envelope of
// each response (wire.go), so that thousands of them on one core cost
// less than the control plane they measure. bench/xdsload is its command
// line.
package xdsload
