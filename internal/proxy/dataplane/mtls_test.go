package dataplane

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	upstreamhttp "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"weft.dev/weft/internal/proxy/proxytest"
	"weft.dev/weft/internal/xds/contract"
)

// mtlsProxy is a data plane with a workload certificate for id.
func mtlsProxy(t testing.TB, ca *proxytest.MeshCA, name, id string, reg prometheus.Registerer) (*Dataplane, *proxytest.Secrets) {
	t.Helper()
	s := ca.Secrets(t, id)
	d, err := New(Options{Identity: contract.Identity{WorkloadName: name, Namespace: "default",
		Labels: map[string]string{"app": name, "version": "v1"}}, Metrics: reg, Secrets: s, Principal: id})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := d.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d, s
}

// inboundResources is an inbound listener of mode routing everything to
// the app at app.
func inboundResources(t testing.TB, mode, app string) *xdsResources {
	return resourcesAny(staticCluster(t, "inbound|9080||", app),
		proxytest.InboundListener(t, "in", mode, routeConfig("inbound|9080||",
			vhost("inbound|http|9080", []string{"*"}, toCluster("default", prefixMatch("/"), "inbound|9080||")))))
}

// mtlsClient is an HTTP client presenting cert (nil: none) over TLS,
// trusting any server certificate (the test checks the server side).
func mtlsClient(t testing.TB, cert *tls.Certificate, h2 bool) *http.Client {
	cfg := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // test client
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{TLSClientConfig: cfg, MaxIdleConnsPerHost: 10}
	tr.Protocols = new(http.Protocols)
	if h2 {
		tr.Protocols.SetHTTP2(true)
	} else {
		tr.Protocols.SetHTTP1(true)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func certHash(c *tls.Certificate) string {
	sum := sha256.Sum256(c.Certificate[0])
	return hex.EncodeToString(sum[:])
}

// listenerCounter reads an envoy_listener_* counter of listener "in".
func listenerCounter(t testing.TB, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelValue(m, listenerAddressLabel) == "in" {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// waitCounter waits (at most 5s) for an envoy_listener_* counter of
// listener "in" to reach want.
func waitCounter(t testing.TB, g prometheus.Gatherer, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := listenerCounter(t, g, name)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s = %v, want %v", name, got, want)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func labelValue(m *dto.Metric, name string) string {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name {
			return lp.GetValue()
		}
	}
	return ""
}

// plaintextRefused sends a plaintext request on a new connection and
// reports whether the proxy closed it without an answer.
func plaintextRefused(t testing.TB, addr string) bool {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	n, err := c.Read(make([]byte, 64))
	return n == 0 && err != nil && !isTimeout(err)
}

// TestInboundStrict: a STRICT port refuses plaintext at the connection
// and clients without a mesh certificate at the handshake, and serves
// mutual TLS (HTTP/1.1 and HTTP/2 by ALPN) with the client's identity in
// x-forwarded-client-cert.
func TestInboundStrict(t *testing.T) {
	ca := proxytest.NewMeshCA(t)
	serverID, clientID := proxytest.SPIFFE("default", "reviews"), proxytest.SPIFFE("default", "productpage")
	reg := newRegistry()
	d, _ := mtlsProxy(t, ca, "reviews", serverID, reg)
	mustApply(t, d, inboundResources(t, proxytest.Strict, echoUpstream(t, "reviews-app", false)))
	addr := d.ListenerAddr("in").String()

	for i := range 3 {
		if !plaintextRefused(t, addr) {
			t.Fatalf("plaintext connection %d was answered", i)
		}
	}
	if got := listenerCounter(t, reg, "envoy_listener_ssl_connection_error"); got != 3 {
		t.Errorf("ssl_connection_error = %v, want 3", got)
	}

	cert := ca.Issue(t, clientID, time.Hour)
	for _, h2 := range []bool{false, true} {
		got := do(t, mtlsClient(t, cert, h2), "GET", "https://"+addr+"/", "reviews", map[string]string{"X-Forwarded-Client-Cert": "By=spiffe://elsewhere;URI=spiffe://upstream"})
		want := fmt.Sprintf(`By=spiffe://elsewhere;URI=spiffe://upstream,By=%s;Hash=%s;Subject="";URI=%s`, serverID, certHash(cert), clientID)
		if got.code != 200 || got.header.Get("X-Seen-Xfcc") != want {
			t.Errorf("h2=%v: %d, app saw XFCC %q, want %q", h2, got.code, got.header.Get("X-Seen-Xfcc"), want)
		}
		if xfp := got.header.Get("X-Seen-Xfp"); xfp != "https" {
			t.Errorf("h2=%v: x-forwarded-proto %q, want https", h2, xfp)
		}
	}
	if got := listenerCounter(t, reg, "envoy_listener_ssl_handshake"); got < 2 {
		t.Errorf("ssl_handshake = %v, want >= 2", got)
	}
	if got := counterValue(t, reg, map[string]string{"reporter": "destination", "connection_security_policy": "mutual_tls",
		"source_principal": clientID, "destination_principal": serverID}); got != 2 {
		t.Errorf("istio_requests_total{mutual_tls, principals} = %v, want 2", got)
	}

	// Refused at the handshake: a certificate of another root, none, one
	// without SPIFFE ID.
	other := proxytest.NewMeshCA(t)
	for name, cert := range map[string]*tls.Certificate{
		"another root": other.Issue(t, clientID, time.Hour),
		"no cert":      nil,
		"no SPIFFE ID": ca.Issue(t, "", time.Hour, "productpage.example"),
	} {
		req, _ := http.NewRequest("GET", "https://"+addr+"/", nil)
		if resp, err := mtlsClient(t, cert, false).Do(req); err == nil {
			resp.Body.Close()
			t.Errorf("%s: served (%d)", name, resp.StatusCode)
		}
	}
	// The client may see the refusal before the server has counted it
	// (TLS 1.3: the server checks the client's certificate last).
	waitCounter(t, reg, "envoy_listener_ssl_connection_error", 6)
}

// TestInboundPermissive: one port serves plaintext and mutual TLS, told
// apart by the first bytes; a plaintext client's own
// x-forwarded-client-cert is removed.
func TestInboundPermissive(t *testing.T) {
	ca := proxytest.NewMeshCA(t)
	serverID, clientID := proxytest.SPIFFE("default", "reviews"), proxytest.SPIFFE("default", "productpage")
	d, _ := mtlsProxy(t, ca, "reviews", serverID, nil)
	mustApply(t, d, inboundResources(t, proxytest.Permissive, echoUpstream(t, "reviews-app", false)))
	addr := d.ListenerAddr("in").String()

	plain := do(t, client(t, false), "GET", "http://"+addr+"/", "reviews", map[string]string{"X-Forwarded-Client-Cert": "URI=spiffe://forged"})
	if plain.code != 200 || plain.header.Get("X-Seen-Xfcc") != "" || plain.header.Get("X-Seen-Xfp") != "http" {
		t.Errorf("plaintext: %d, XFCC %q, XFP %q; want 200, none, http", plain.code, plain.header.Get("X-Seen-Xfcc"), plain.header.Get("X-Seen-Xfp"))
	}
	h2c := do(t, client(t, true), "GET", "http://"+addr+"/", "reviews", nil)
	if h2c.code != 200 || h2c.header.Get("X-Seen-Proto") != "HTTP/1.1" {
		t.Errorf("h2c: %d", h2c.code)
	}
	cert := ca.Issue(t, clientID, time.Hour)
	mtls := do(t, mtlsClient(t, cert, false), "GET", "https://"+addr+"/", "reviews", nil)
	if mtls.code != 200 || !strings.Contains(mtls.header.Get("X-Seen-Xfcc"), "URI="+clientID) {
		t.Errorf("mutual TLS: %d, XFCC %q", mtls.code, mtls.header.Get("X-Seen-Xfcc"))
	}
}

// TestInboundModeChangesKeepConnections: a port that turns from
// PERMISSIVE to STRICT keeps serving its plaintext keep-alive
// connections' requests, asking them to close, and refuses new plaintext
// ones; back to DISABLE, mutual TLS connections finish the same way.
func TestInboundModeChangesKeepConnections(t *testing.T) {
	ca := proxytest.NewMeshCA(t)
	d, _ := mtlsProxy(t, ca, "reviews", proxytest.SPIFFE("default", "reviews"), nil)
	app := echoUpstream(t, "reviews-app", false)
	mustApply(t, d, inboundResources(t, proxytest.Permissive, app))
	addr := d.ListenerAddr("in").String()

	plain, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	br := bufio.NewReader(plain)
	get := func() *http.Response {
		t.Helper()
		plain.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(plain, "GET / HTTP/1.1\r\nHost: reviews\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("plaintext keep-alive request: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if r := get(); r.StatusCode != 200 || r.Close {
		t.Fatalf("before: %d close=%v", r.StatusCode, r.Close)
	}
	tlsClient := mtlsClient(t, ca.Issue(t, proxytest.SPIFFE("default", "productpage"), time.Hour), false)
	if r := do(t, tlsClient, "GET", "https://"+addr+"/", "reviews", nil); r.code != 200 {
		t.Fatalf("mutual TLS before: %d", r.code)
	}

	mustApply(t, d, inboundResources(t, proxytest.Strict, app))
	if d.ListenerAddr("in").String() != addr {
		t.Fatal("the listener was rebound")
	}
	if r := get(); r.StatusCode != 200 || !r.Close {
		t.Errorf("the plaintext connection's request after STRICT: %d close=%v; want 200 and Connection: close", r.StatusCode, r.Close)
	}
	if !plaintextRefused(t, addr) {
		t.Error("a new plaintext connection was served on a STRICT port")
	}
	if r := do(t, tlsClient, "GET", "https://"+addr+"/", "reviews", nil); r.code != 200 || r.close {
		t.Errorf("mutual TLS after STRICT: %d close=%v", r.code, r.close)
	}

	mustApply(t, d, inboundResources(t, proxytest.Disable, app))
	if r := do(t, tlsClient, "GET", "https://"+addr+"/", "reviews", nil); r.code != 200 || !r.close {
		t.Errorf("the mutual TLS connection's request after DISABLE: %d close=%v; want 200 and Connection: close", r.code, r.close)
	}
	if r := do(t, client(t, false), "GET", "http://"+addr+"/", "reviews", nil); r.code != 200 {
		t.Errorf("plaintext after DISABLE: %d", r.code)
	}
}

// twoHops is a client proxy whose outbound cluster "outbound|9080||reviews"
// reaches a server proxy's STRICT inbound listener over automatic mutual
// TLS (the endpoint says tlsMode=istio), and a plaintext app directly.
type twoHops struct {
	client, server       *Dataplane
	clientReg, serverReg *prometheus.Registry
	clientSecrets        *proxytest.Secrets
	outbound             string
}

const twoHopsCluster = "outbound|9080||reviews.default.svc.cluster.local"

func newTwoHops(t testing.TB, ca *proxytest.MeshCA, sans []string, maxUses uint32) *twoHops {
	t.Helper()
	h := &twoHops{clientReg: newRegistry(), serverReg: newRegistry()}
	serverID, clientID := proxytest.SPIFFE("default", "reviews"), proxytest.SPIFFE("default", "productpage")
	h.server, _ = mtlsProxy(t, ca, "reviews", serverID, h.serverReg)
	mustApply(t, h.server, inboundResources(t, proxytest.Strict, echoUpstream(t, "reviews-app", false)))
	h.client, h.clientSecrets = mtlsProxy(t, ca, "productpage", clientID, h.clientReg)
	h.applyClient(t, sans, maxUses)
	h.outbound = "http://" + h.client.ListenerAddr("out").String() + "/"
	return h
}

func (h *twoHops) applyClient(t testing.TB, sans []string, maxUses uint32) {
	t.Helper()
	c := edsCluster(t, twoHopsCluster, false, "reviews.default.svc.cluster.local")
	if maxUses > 0 {
		withMaxRequestsPerConnection(t, c, maxUses)
	}
	proxytest.AutoMTLS(t, c, proxytest.IstioUpstreamTLS("outbound_.9080_._.reviews.default.svc.cluster.local", sans, "http/1.1"))
	mustApply(t, h.client, resourcesAny(c,
		cla(twoHopsCluster, ep{Addr: h.server.ListenerAddr("in").String(), TLSMode: contract.TLSModeIstio,
			Workload: contract.WorkloadMetadata("reviews-v1", "default", "reviews", "v1", "Kubernetes")}),
		routeConfig(contract.RouteHTTPProxy, vhost("reviews", []string{"reviews"}, toCluster("default", prefixMatch("/"), twoHopsCluster))),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, contract.RouteHTTPProxy, nil)))
}

// TestOutboundAutoMTLS: the client proxy uses mutual TLS toward an
// endpoint with a sidecar; the server's app sees the client's identity;
// both sides' metrics carry Istio's security labels.
func TestOutboundAutoMTLS(t *testing.T) {
	ca := proxytest.NewMeshCA(t)
	serverID, clientID := proxytest.SPIFFE("default", "reviews"), proxytest.SPIFFE("default", "productpage")
	h := newTwoHops(t, ca, []string{serverID}, 0)
	c := client(t, false)
	for range 3 {
		got := do(t, c, "GET", h.outbound, "reviews", map[string]string{"X-Forwarded-Client-Cert": "URI=spiffe://forged"})
		if got.code != 200 || got.upstream != "reviews-app" {
			t.Fatalf("through both proxies: %d %q", got.code, got.upstream)
		}
		// The client proxy removes what its app sent (SANITIZE on the
		// outbound listener); the server proxy sets the caller's element.
		want := fmt.Sprintf(`By=%s;Hash=%s;Subject="";URI=%s`, serverID, certHash(h.clientSecrets.Certificate()), clientID)
		if xfcc := got.header.Get("X-Seen-Xfcc"); xfcc != want {
			t.Errorf("app saw XFCC %q, want %q", xfcc, want)
		}
	}
	if got := counterValue(t, h.clientReg, map[string]string{"reporter": "source", "connection_security_policy": "unknown",
		"source_principal": clientID, "destination_principal": serverID, "response_code": "200"}); got != 3 {
		t.Errorf("source side istio_requests_total with principals = %v, want 3", got)
	}
	if got := counterValue(t, h.serverReg, map[string]string{"reporter": "destination", "connection_security_policy": "mutual_tls",
		"source_principal": clientID, "destination_principal": serverID, "source_workload": "productpage"}); got != 3 {
		t.Errorf("destination side istio_requests_total with principals = %v, want 3", got)
	}
	// One connection carried the three requests: one handshake.
	if got := listenerCounter(t, h.serverReg, "envoy_listener_ssl_handshake"); got != 1 {
		t.Errorf("server handshakes = %v, want 1 (kept-alive upstream connection)", got)
	}
}

// TestOutboundMTLSWrongServer: a server whose identity is not the one
// the cluster expects is refused at the handshake: 503 UF.
func TestOutboundMTLSWrongServer(t *testing.T) {
	ca := proxytest.NewMeshCA(t)
	h := newTwoHops(t, ca, []string{proxytest.SPIFFE("default", "ratings")}, 0)
	got := do(t, client(t, false), "GET", h.outbound, "reviews", nil)
	if got.code != 503 || !strings.Contains(got.body, "connection failure") {
		t.Errorf("got %d %q, want 503 connection failure", got.code, got.body)
	}
	if n := counterValue(t, h.clientReg, map[string]string{"reporter": "source", "response_flags": "UF"}); n != 1 {
		t.Errorf("UF requests = %v", n)
	}
}

// TestOutboundMTLSRotation: connections the client proxy opens resume
// its TLS session until its certificate rotates; the next connection
// then presents the new certificate (the server sees its hash), and the
// connection it had keeps working.
func TestOutboundMTLSRotation(t *testing.T) {
	ca := proxytest.NewMeshCA(t)
	clientID := proxytest.SPIFFE("default", "productpage")
	h := newTwoHops(t, ca, nil, 1) // one request per upstream connection
	c := client(t, false)
	hashOf := func() string {
		t.Helper()
		got := do(t, c, "GET", h.outbound, "reviews", nil)
		if got.code != 200 {
			t.Fatalf("got %d %q", got.code, got.body)
		}
		_, hash, _ := strings.Cut(got.header.Get("X-Seen-Xfcc"), "Hash=")
		hash, _, _ = strings.Cut(hash, ";")
		return hash
	}
	first := h.clientSecrets.Certificate()
	for range 3 {
		if got := hashOf(); got != certHash(first) {
			t.Fatalf("server saw certificate %s, want %s", got, certHash(first))
		}
	}
	if got := listenerCounter(t, h.serverReg, "envoy_listener_ssl_session_reused"); got < 1 {
		t.Errorf("ssl_session_reused = %v: reconnects did not resume", got)
	}
	next := ca.Issue(t, clientID, time.Hour)
	h.clientSecrets.Set(next)
	for range 2 {
		if got := hashOf(); got != certHash(next) {
			t.Errorf("after rotation the server saw certificate %s, want the new %s", got, certHash(next))
		}
	}
}

// TestOutboundMTLSHTTP2: an HTTP/2 cluster reaches a STRICT port over
// mutual TLS with ALPN h2 (the endpoint's own transport).
func TestOutboundMTLSHTTP2(t *testing.T) {
	ca := proxytest.NewMeshCA(t)
	serverID := proxytest.SPIFFE("default", "reviews")
	server, _ := mtlsProxy(t, ca, "reviews", serverID, nil)
	mustApply(t, server, inboundResources(t, proxytest.Strict, echoUpstream(t, "reviews-app", true)))
	cl, _ := mtlsProxy(t, ca, "productpage", proxytest.SPIFFE("default", "productpage"), nil)
	c := edsCluster(t, twoHopsCluster, true, "reviews.default.svc.cluster.local")
	proxytest.AutoMTLS(t, c, proxytest.IstioUpstreamTLS("", []string{serverID}, "h2"))
	mustApply(t, cl, resourcesAny(c,
		cla(twoHopsCluster, ep{Addr: server.ListenerAddr("in").String(), TLSMode: contract.TLSModeIstio}),
		routeConfig(contract.RouteHTTPProxy, vhost("reviews", []string{"reviews"}, toCluster("default", prefixMatch("/"), twoHopsCluster))),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, contract.RouteHTTPProxy, nil)))
	got := do(t, client(t, false), "GET", "http://"+cl.ListenerAddr("out").String()+"/", "reviews", nil)
	if got.code != 200 || !strings.Contains(got.header.Get("X-Seen-Xfcc"), "By="+serverID) {
		t.Errorf("got %d, XFCC %q", got.code, got.header.Get("X-Seen-Xfcc"))
	}
}

// withMaxRequestsPerConnection sets max_requests_per_connection on an
// HTTP/1.1 cluster.
func withMaxRequestsPerConnection(t testing.TB, c *clusterv3.Cluster, n uint32) {
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: mustAny(t, &upstreamhttp.HttpProtocolOptions{
		CommonHttpProtocolOptions: &core.HttpProtocolOptions{MaxRequestsPerConnection: wrapperspb.UInt32(n)},
		UpstreamProtocolOptions: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &core.Http1ProtocolOptions{}}}}})}
}

// TestGoldenSecurityTranslates: the generator's security goldens (mutual
// TLS in every mode, DestinationRule tls, automatic mutual TLS) are
// configurations the proxy accepts.
func TestGoldenSecurityTranslates(t *testing.T) {
	ca := proxytest.NewMeshCA(t)
	d, _ := mtlsProxy(t, ca, "productpage", proxytest.SPIFFE("default", "productpage"), nil)
	dirs := goldenDirs(t)
	cases := goldenResources(t)
	seen := 0
	for i, r := range cases {
		name := filepath.Base(dirs[i])
		if !strings.Contains(name, "mtls") && !strings.Contains(name, "tls") {
			continue
		}
		seen++
		if _, err := d.translate(r, nil); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if seen < 3 {
		t.Errorf("%d security goldens, want at least 3", seen)
	}
}
