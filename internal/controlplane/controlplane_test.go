package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"weft.dev/weft/internal/testenv"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"weft.dev/weft/internal/xds/contract"
)

const meshYAML = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{name: http, number: 9080, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec:
  address: 127.0.0.2
  labels: {app: reviews, version: v1}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - name: to-reviews
    route:
    - destination: {host: reviews}
`

func TestRunServesConfigAndStatus(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "mesh.yaml"), []byte(meshYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	cp, err := New(Options{
		ConfigDir: dir, XDSAddress: "127.0.0.1:0", XDSPlaintextAddress: "127.0.0.1:0", StatusAddress: "127.0.0.1:0",
		Debounce: time.Millisecond, DebounceMax: 10 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()

	// A proxy connects (on the plaintext port) and sees the VirtualService's route.
	conn, err := grpc.NewClient(cp.XDSPlaintextAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := contract.Identity{ID: contract.DefaultNodeID("127.0.0.1", "productpage", "default"), Namespace: "default",
		WorkloadName: "productpage", IPs: []string{"127.0.0.1"}, OutboundAddress: "127.0.0.1:15001"}
	if err := stream.Send(&discovery.DiscoveryRequest{Node: id.Node(), TypeUrl: resource.RouteType, ResourceNames: []string{contract.RouteHTTPProxy}}); err != nil {
		t.Fatal(err)
	}
	var routeName string
	for routeName == "" {
		// The first config may still be on its way; the route arrives with it.
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		for _, a := range resp.GetResources() {
			var rc route.RouteConfiguration
			if err := a.UnmarshalTo(&rc); err != nil {
				t.Fatal(err)
			}
			for _, vh := range rc.GetVirtualHosts() {
				for _, r := range vh.GetRoutes() {
					routeName = r.GetName()
				}
			}
		}
		if err := stream.Send(&discovery.DiscoveryRequest{TypeUrl: resource.RouteType, ResourceNames: []string{contract.RouteHTTPProxy},
			VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
			t.Fatal(err)
		}
	}
	if routeName != "to-reviews" {
		t.Fatalf("route name %q, want to-reviews", routeName)
	}

	// A bad file shows up in /status; the good config stays in force.
	if err := os.WriteFile(filepath.Join(dir, "broken.yaml"), []byte("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bad}\nspec: {hosts: 42}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := "http://" + cp.StatusAddr().String()
	var st Status
	for {
		st = Status{}
		getJSON(t, ctx, base+"/status", &st)
		// The store's diagnostics show as soon as it has loaded; the mesh
		// version a moment later, once the snapshot is applied.
		if len(st.Diagnostics) > 0 && strings.HasPrefix(st.Version, fmt.Sprintf("%d-", st.ConfigVersion)) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("broken.yaml never showed up in /status: %+v", st)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if !strings.HasSuffix(st.Diagnostics[0].File, "broken.yaml") || st.Diagnostics[0].Severity != "error" {
		t.Errorf("diagnostic = %+v, want an error in broken.yaml", st.Diagnostics[0])
	}
	if st.Resources.Services != 1 || st.Resources.Endpoints != 1 || st.Resources.VirtualServices != 1 || st.Version == "" {
		t.Errorf("status = %+v", st)
	}
	if st.ConnectedProxies != 1 || cp.Pushes() == 0 {
		t.Errorf("connected proxies = %d, pushes = %d", st.ConnectedProxies, cp.Pushes())
	}

	metrics := get(t, ctx, base+"/metrics")
	for _, m := range []string{"weft_xds_pushes_total", "weft_xds_connected_proxies 1",
		"pilot_xds 1", `pilot_xds_pushes{type="rds"}`, "pilot_vservice_dup_domain 0", "weft_registry_conflicts 0"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}
	if snap := get(t, ctx, base+"/debug/snapshot"); !strings.Contains(snap, `"default/reviews"`) {
		t.Errorf("/debug/snapshot = %s", snap)
	}
	var dp DebugProxies
	getJSON(t, ctx, base+"/debug/proxies", &dp)
	if len(dp.Proxies) != 1 || dp.Proxies[0].Node != id.ID || dp.Proxies[0].Workload != "productpage" || len(dp.Proxies[0].Types) != 4 || dp.Version != st.Version {
		t.Fatalf("/debug/proxies = %+v, want productpage with 4 types at mesh version %s", dp, st.Version)
	}
	for _, ts := range dp.Proxies[0].Types {
		if ts.Type == "RDS" && (ts.Sent == "" || ts.Current == "") {
			t.Errorf("/debug/proxies RDS = %+v, want a version sent", ts)
		}
	}
}

func TestNewRejectsMissingDirAndBusyPort(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Error("New without ConfigDir succeeded")
	}
	cp, err := New(Options{ConfigDir: t.TempDir(), XDSAddress: "127.0.0.1:0", StatusAddress: StatusDisabled})
	if err != nil {
		t.Fatal(err)
	}
	if cp.StatusAddr() != nil {
		t.Error("status listener bound although disabled")
	}
	_, err = New(Options{ConfigDir: t.TempDir(), XDSAddress: cp.XDSAddr().String()})
	if err == nil || !strings.Contains(err.Error(), "xds listener") {
		t.Errorf("binding a busy port: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := cp.Run(ctx); err != nil { // releases the listeners
		t.Fatal(err)
	}
}

func TestRunFailsOnMissingConfigDir(t *testing.T) {
	cp, err := New(Options{ConfigDir: filepath.Join(t.TempDir(), "nope"), XDSAddress: "127.0.0.1:0", StatusAddress: "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cp.Run(ctx); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("Run = %v, want an error naming the directory", err)
	}
}

func get(t *testing.T, ctx context.Context, url string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b)
}

func getJSON(t *testing.T, ctx context.Context, url string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(get(t, ctx, url)), v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// TestRunHandsMemoryBackWhenQuiet: with ReleaseWhenQuiet, a control plane
// that has published its config and has nothing more to send hands its
// free heap memory back (the debug log says so).
func TestRunHandsMemoryBackWhenQuiet(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "mesh.yaml"), []byte(meshYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs testenv.SyncBuffer
	cp, err := New(Options{
		ConfigDir: dir, XDSAddress: "127.0.0.1:0", StatusAddress: "127.0.0.1:0",
		ReleaseWhenQuiet: 200 * time.Millisecond,
		Logger:           slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(logs.String(), "quiet: heap memory handed back") {
		if time.Now().After(deadline) {
			t.Fatalf("no release 15 s after start; log:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
