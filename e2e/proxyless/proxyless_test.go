// Package proxyless tests proxyless gRPC end to end: the built `weft
// serve` and `weft grpc-bootstrap`, a gRPC-Go client using gRPC's own xDS
// client (google.golang.org/grpc/xds) with the bootstrap Weft printed, and
// two real gRPC servers registered in the mesh as two versions of one
// service. No sidecar is involved.
package proxyless

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"weft.dev/weft/internal/testenv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"
)

const repoRoot = "../.."

// buildWeft builds cmd/weft into a temporary directory.
func buildWeft(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the weft binary")
	}
	dir := t.TempDir()
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", dir, "./cmd/weft")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return filepath.Join(dir, "weft")
}

// serve starts `weft serve` on dir with a plaintext ADS port and returns
// that port's address. It is stopped at cleanup; its output is logged if
// the test failed.
func serve(t *testing.T, weft, dir string) string {
	t.Helper()
	plain := freeAddr(t)
	args := []string{"serve", "--config", dir, "--xds-address", freeAddr(t), "--xds-plaintext-address", plain,
		"--status-address", freeAddr(t), "--ca-dir", filepath.Join(t.TempDir(), "ca"),
		"--debounce", "20ms", "--debounce-max", "200ms", "--log-level", "info"}
	cmd := exec.Command(weft, args...)
	var out testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start weft serve: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("weft serve output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "control plane running") {
		select {
		case <-done:
			t.Fatalf("weft serve exited:\n%s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("weft serve did not start within 60s:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return plain
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// backend is a gRPC server (the standard health service) that says which
// version it is in the "x-version" response header, and sleeps for the
// duration in the "x-sleep" request header first.
func backend(t *testing.T, version string) int {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if err := grpc.SetHeader(ctx, metadata.Pairs("x-version", version)); err != nil {
			return nil, err
		}
		if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get("x-sleep")) > 0 {
			d, err := time.ParseDuration(md.Get("x-sleep")[0])
			if err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "x-sleep: %v", err)
			}
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(s, health.NewServer())
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().(*net.TCPAddr).Port
}

const servicesYAML = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend, namespace: shop}
spec:
  hosts: [backend.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8080, name: grpc, protocol: GRPC}
  workloadSelector:
    labels: {app: backend}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-v1, namespace: shop}
spec:
  address: 127.0.0.1
  ports: {grpc: %d}
  labels: {app: backend, version: v1}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-v2, namespace: shop}
spec:
  address: 127.0.0.1
  ports: {grpc: %d}
  labels: {app: backend, version: v2}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend, namespace: shop}
spec:
  host: backend
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`

// routesYAML routes x-fault: abort to an injected PERMISSION_DENIED,
// x-sleep to v1 with a 300ms timeout, x-canary: yes to v2, and the rest
// by weight.
const routesYAML = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: shop}
spec:
  hosts: [backend]
  http:
  - match: [{headers: {x-fault: {exact: abort}}}]
    fault: {abort: {grpcStatus: PERMISSION_DENIED, percentage: {value: 100}}}
    route: [{destination: {host: backend, subset: v1}}]
  - match: [{headers: {x-sleep: {}}}]
    timeout: 300ms
    route: [{destination: {host: backend, subset: v1}}]
  - match: [{headers: {x-canary: {exact: "yes"}}}]
    route: [{destination: {host: backend, subset: v2}}]
  - route:
    - {destination: {host: backend, subset: v1}, weight: %d}
    - {destination: {host: backend, subset: v2}, weight: %d}
`

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil { // one event: the watcher never sees half a file
		t.Fatal(err)
	}
}

func TestControlPlaneProxylessGRPC(t *testing.T) {
	weft := buildWeft(t)
	v1, v2 := backend(t, "v1"), backend(t, "v2")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "services.yaml"), fmt.Sprintf(servicesYAML, v1, v2))
	vs := filepath.Join(dir, "routes.yaml")
	writeFile(t, vs, fmt.Sprintf(routesYAML, 90, 10))
	plain := serve(t, weft, dir)

	bootstrap, err := exec.Command(weft, "grpc-bootstrap", "--xds-address", plain,
		"--namespace", "shop", "--workload", "client", "--labels", "app=client").Output()
	if err != nil {
		t.Fatalf("weft grpc-bootstrap: %v", err)
	}
	resolver, err := xds.NewXDSResolverWithConfigForTesting(bootstrap)
	if err != nil {
		t.Fatalf("gRPC does not accept the bootstrap: %v\n%s", err, bootstrap)
	}
	// The short name, as a client in namespace shop dials it.
	conn, err := grpc.NewClient("xds:///backend:8080", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(resolver))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := healthpb.NewHealthClient(conn)

	// call makes one RPC with the given request headers and returns the
	// version that answered.
	call := func(headers ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, headers...)
		var md metadata.MD
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&md))
		if err != nil {
			return "", err
		}
		return strings.Join(md.Get("x-version"), ","), nil
	}
	count := func(n int, headers ...string) map[string]int {
		t.Helper()
		got := map[string]int{}
		for range n {
			v, err := call(headers...)
			if err != nil {
				t.Fatalf("call %v: %v", headers, err)
			}
			got[v]++
		}
		return got
	}

	// The first call waits for LDS, RDS, CDS and EDS.
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := call()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no successful call through xds:///backend:8080 within 60s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	t.Run("split 90/10", func(t *testing.T) {
		got := count(1000)
		t.Logf("1000 calls: %v", got)
		// Binomial(1000, 0.1): mean 100, sd 9.5; 60..140 is over 4 sd.
		if got["v1"]+got["v2"] != 1000 || got["v2"] < 60 || got["v2"] > 140 {
			t.Errorf("1000 calls went %v, want about 900 v1 and 100 v2", got)
		}
	})
	t.Run("header match", func(t *testing.T) {
		got := count(1000, "x-canary", "yes")
		if got["v2"] != 1000 {
			t.Errorf("1000 calls with x-canary: yes went %v, want all to v2", got)
		}
	})
	t.Run("fault injection", func(t *testing.T) {
		_, err := call("x-fault", "abort")
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("call with x-fault: abort: %v, want the injected PERMISSION_DENIED", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		if v, err := call("x-sleep", "10ms"); err != nil || v != "v1" {
			t.Errorf("call sleeping 10ms: %q, %v; want v1 within the 300ms timeout", v, err)
		}
		_, err := call("x-sleep", "3s")
		if status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("call sleeping 3s: %v, want DEADLINE_EXCEEDED from the route's 300ms timeout", err)
		}
	})
	t.Run("name forms", func(t *testing.T) {
		// Every name a client in shop may use is a listener of its own.
		for _, target := range []string{"backend.shop:8080", "backend.shop.svc:8080", "backend.shop.svc.cluster.local:8080"} {
			c, err := grpc.NewClient("xds:///"+target, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(resolver))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err = healthpb.NewHealthClient(c).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
			cancel()
			c.Close()
			if err != nil {
				t.Errorf("xds:///%s: %v", target, err)
			}
		}
	})
	t.Run("live weight change", func(t *testing.T) {
		writeFile(t, vs, fmt.Sprintf(routesYAML, 10, 90))
		// Converged when a window of 100 calls is mostly v2 (under the old
		// weights that has probability below 1e-40).
		deadline := time.Now().Add(30 * time.Second)
		for {
			if got := count(100); got["v2"] > 50 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("calls did not follow the new weights within 30s")
			}
		}
		got := count(1000)
		t.Logf("1000 calls after the edit: %v", got)
		if got["v1"]+got["v2"] != 1000 || got["v1"] < 60 || got["v1"] > 140 {
			t.Errorf("1000 calls went %v, want about 100 v1 and 900 v2", got)
		}
	})
}
