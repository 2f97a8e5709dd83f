package consul

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/hashicorp/consul/api"
)

// BenchmarkServiceChange is the control-plane cost of one instance's
// health change among 1,000 services of 3 instances each: converting the
// service's answer and publishing a new snapshot of the whole catalog.
func BenchmarkServiceChange(b *testing.B) {
	s, err := New(Options{Address: "127.0.0.1:1", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	entries := func(svc string, status string) []*api.ServiceEntry {
		var out []*api.ServiceEntry
		for i := range 3 {
			out = append(out, inst(node(fmt.Sprintf("vm-%d", i), fmt.Sprintf("10.1.0.%d", i), map[string]string{"zone": "z1"}),
				svc, 8080, []string{"version=v1", "protocol=http"}, map[string]string{"team": "t"}, status))
		}
		return out
	}
	var names []string
	for i := range 1000 {
		names = append(names, fmt.Sprintf("svc-%04d", i))
	}
	seq, _ := s.startCatalogQuery(func() {})
	s.catalogRead(seq, names, nil)
	for _, n := range names {
		s.serviceRead(ctx, "service "+n, n, entries(n, api.HealthPassing))
	}
	passing, critical := entries("svc-0500", api.HealthPassing), entries("svc-0500", api.HealthCritical)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		e := passing
		if i%2 == 0 {
			e = critical
		}
		s.serviceRead(ctx, "service svc-0500", "svc-0500", e)
		<-s.Changed()
	}
}
