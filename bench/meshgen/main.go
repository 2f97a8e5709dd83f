// Command meshgen writes a generated mesh of Istio YAML (internal/xdsload's
// mesh writer: a ServiceEntry, DestinationRule and VirtualService per
// service, WorkloadEntries as endpoints) into a directory, for benchmarks
// that need a large config pushed to a real sidecar (bench/memory.sh).
//
//	go run ./bench/meshgen -dir /tmp/mesh -services 1000 -endpoints 1 -spare 1
package main

import (
	"flag"
	"fmt"
	"os"

	"weft.dev/weft/internal/xdsload"
)

func main() {
	dir := flag.String("dir", "", "directory to write the mesh into (created if missing; required)")
	services := flag.Int("services", 1000, "services")
	endpoints := flag.Int("endpoints", 1, "WorkloadEntries per service")
	spare := flag.Int("spare", 0, "further WorkloadEntries per service")
	namespaces := flag.Int("namespaces", 10, "namespaces the services are spread over")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "meshgen: -dir is required")
		os.Exit(2)
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "meshgen:", err)
		os.Exit(1)
	}
	spec := xdsload.MeshSpec{Services: *services, Endpoints: *endpoints, Spare: *spare, Namespaces: *namespaces}
	if _, err := xdsload.WriteMesh(*dir, spec); err != nil {
		fmt.Fprintln(os.Stderr, "meshgen:", err)
		os.Exit(1)
	}
}
