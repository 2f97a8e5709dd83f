package binary

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// TestGRPCThroughBuiltSidecars: gRPC from grpc-go's client through two
// built weft-proxies — a client sidecar's outbound listener, an HTTP/2
// cluster to the server sidecar's inbound listener, an HTTP/2 cluster to
// the app — to grpc-go's health service: h2c on every hop, through the
// proxies' own HTTP/2 server and client. Unary calls (a trailers-only
// answer among them), a server stream that is cancelled, and 200 calls
// at once on one client connection.
func TestGRPCThroughBuiltSidecars(t *testing.T) {
	bin := binaries(t)
	pre := newPrefix()
	const host = "greeter.default.svc.cluster.local"

	ln, err := net.Listen("tcp", pre+"5:18079")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("weft", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)

	cfg := t.TempDir()
	yaml := fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: greeter, namespace: default}
spec:
  hosts: [%s]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8079, name: grpc, protocol: GRPC}]
  workloadSelector: {labels: {app: greeter}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: greeter-1, namespace: default}
spec:
  address: %s2
  ports: {grpc: 8079}
  labels: {app: greeter, version: v1}
`, host, pre)
	if err := os.WriteFile(filepath.Join(cfg, "greeter.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	xds := pre + "100:15010"
	start(t, filepath.Join(bin, "weft"), "serve", "--config", cfg, "--xds-address", pre+"100:15012",
		"--xds-plaintext-address", xds, "--status-address", pre+"100:15014", "--log-level", "warn")
	proxy := filepath.Join(bin, "weft-proxy")
	start(t, proxy, "--xds-plaintext", "--xds-address", xds, "--workload", "greeter-1", "--labels", "app=greeter,version=v1",
		"--ip", pre+"2", "--outbound", "", "--app-port", "8079="+pre+"5:18079", "--admin-address", pre+"2:15000", "--log-level", "warn")
	client := start(t, proxy, "--xds-plaintext", "--xds-address", xds, "--workload", "client", "--labels", "app=client",
		"--ip", pre+"1", "--outbound", pre+"1:15001", "--admin-address", pre+"1:15000", "--log-level", "info")
	client.waitOutput(regexp.MustCompile(`msg="proxy starting"`), 20*time.Second)

	conn, err := grpc.NewClient(pre+"1:15001", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(host+":8079"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	check := func(svc string) (*healthpb.HealthCheckResponse, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
	}
	eventually(t, 30*time.Second, "a health check through both sidecars", func() error {
		resp, err := check("weft")
		if err != nil {
			return err
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("status %v", resp.GetStatus())
		}
		return nil
	})

	// A trailers-only answer: the status in the response's headers.
	if _, err := check("unknown"); status.Code(err) != codes.NotFound {
		t.Errorf("unknown service: %v, want NotFound", err)
	}
	// A long service name: a request larger than one frame.
	if _, err := check(strings.Repeat("s", 40_000)); status.Code(err) != codes.NotFound {
		t.Errorf("a 40 KB request: %v, want NotFound", err)
	}

	// A server stream: the first status arrives, a change follows, and
	// cancelling ends it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "weft"})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := w.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch: %v %v", m, err)
	}
	hs.SetServingStatus("weft", healthpb.HealthCheckResponse_NOT_SERVING)
	if m, err := w.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("watch, after the change: %v %v", m, err)
	}
	cancel()
	if _, err := w.Recv(); status.Code(err) != codes.Canceled {
		t.Errorf("watch after cancel: %v, want Canceled", err)
	}
	hs.SetServingStatus("weft", healthpb.HealthCheckResponse_SERVING)

	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, err := check("weft"); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				errs <- fmt.Errorf("%v %v", resp, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("one of 200 concurrent calls: %v", err)
	}
}
