// Package examples embeds the example configurations so `weft demo` runs
// anywhere, without a checkout.
package examples

import "embed"

// Canary is examples/canary: the gray-release demo's config directory.
//
//go:embed canary/*.yaml
var Canary embed.FS
