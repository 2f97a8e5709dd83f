package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	jwtauthn "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"weft.dev/weft/internal/xds/contract"
)

const (
	keyA = `{"keys":[{"kty":"RSA","kid":"a","e":"AQAB","n":"xY0XIJWEYp4NI437_3O4YSF"}]}`
	keyB = `{"keys":[{"kty":"EC","kid":"b","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}`
)

// TestSecurityConfigReachesProxies runs a control plane with a custom root
// namespace and a RequestAuthentication whose jwksUri is served on
// loopback: the sidecar of the selected workload gets a STRICT listener
// (from the root namespace's PeerAuthentication) whose JWT provider has
// the fetched keys inline; when the key server rotates its keys, the
// control plane pushes the new ones; /status shows the key source.
func TestSecurityConfigReachesProxies(t *testing.T) {
	var mu sync.Mutex
	current := keyA
	keys := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprint(w, current)
	}))
	t.Cleanup(keys.Close)

	dir := t.TempDir()
	cfg := meshYAML + fmt.Sprintf(`
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: mesh-root}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  jwtRules:
  - issuer: %[1]s
    jwksUri: %[1]s/keys
`, keys.URL)
	if err := os.WriteFile(filepath.Join(dir, "mesh.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cp, err := New(Options{
		ConfigDir: dir, XDSAddress: "127.0.0.1:0", XDSPlaintextAddress: "127.0.0.1:0", StatusAddress: "127.0.0.1:0",
		RootNamespace: "mesh-root", JWKSRefresh: 50 * time.Millisecond,
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
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	conn, err := grpc.NewClient(cp.XDSPlaintextAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := contract.Identity{ID: contract.DefaultNodeID("127.0.0.2", "reviews-v1", "default"), Namespace: "default",
		WorkloadName: "reviews-v1", Labels: map[string]string{"app": "reviews", "version": "v1"},
		IPs: []string{"127.0.0.2"}, MTLS: true}
	if err := stream.Send(&discovery.DiscoveryRequest{Node: id.Node(), TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	// inbound waits for the inbound listener to satisfy ok, ACKing every
	// response; it gives up with ctx.
	inbound := func(what string, ok func(l *listener.Listener, jwks string) bool) {
		t.Helper()
		for {
			resp, err := stream.Recv()
			if err != nil {
				t.Fatalf("waiting for %s: %v", what, err)
			}
			matched := false
			for _, a := range resp.GetResources() {
				var l listener.Listener
				if err := a.UnmarshalTo(&l); err != nil {
					t.Fatal(err)
				}
				matched = matched || (l.GetName() == "127.0.0.2_9080" && ok(&l, inlineKeys(t, &l)))
			}
			if err := stream.Send(&discovery.DiscoveryRequest{TypeUrl: resource.ListenerType,
				VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
				t.Fatal(err)
			}
			if matched {
				return
			}
		}
	}
	inbound("a STRICT listener with the fetched keys", func(l *listener.Listener, jwks string) bool {
		return len(l.GetFilterChains()) == 1 && l.GetFilterChains()[0].GetTransportSocket() != nil && jwks == keyA
	})

	var st Status
	getJSON(t, ctx, "http://"+cp.StatusAddr().String()+"/status", &st)
	if len(st.JWKS) != 1 || !st.JWKS[0].Fetched || st.JWKS[0].Source.URI != keys.URL+"/keys" ||
		len(st.JWKS[0].Users) != 1 || !strings.Contains(st.JWKS[0].Users[0], "RequestAuthentication default/jwt") ||
		st.Resources.PeerAuthentications != 1 || st.Resources.RequestAuthentications != 1 {
		t.Errorf("/status = %+v", st)
	}

	mu.Lock()
	current = keyB
	mu.Unlock()
	inbound("the rotated keys", func(_ *listener.Listener, jwks string) bool { return jwks == keyB })
}

// inlineKeys returns the inline JWKS of the listener's JWT provider, or "".
func inlineKeys(t *testing.T, l *listener.Listener) string {
	t.Helper()
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			var m hcm.HttpConnectionManager
			if err := f.GetTypedConfig().UnmarshalTo(&m); err != nil {
				t.Fatal(err)
			}
			for _, hf := range m.GetHttpFilters() {
				if hf.GetName() != contract.FilterJWTAuthn {
					continue
				}
				var j jwtauthn.JwtAuthentication
				if err := hf.GetTypedConfig().UnmarshalTo(&j); err != nil {
					t.Fatal(err)
				}
				for _, p := range j.GetProviders() {
					return p.GetLocalJwks().GetInlineString()
				}
			}
		}
	}
	return ""
}
