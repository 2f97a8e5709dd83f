package rbac

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"

	"weft.dev/weft/internal/proxy/filter"
)

func anyOf(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// peerCert is a certificate for a SPIFFE identity, as a client sidecar
// presents it.
func peerCert(t testing.TB, id string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(id)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// streamFor is the filters' view of a request that arrived on local from
// remote, over TLS with peer's certificate when peer is not nil.
func streamFor(method, target string, local, remote string, peer *x509.Certificate) *filter.Stream {
	r := httptest.NewRequest(method, "http://svc"+target, nil)
	r.RequestURI = target
	r.RemoteAddr = remote
	la := net.TCPAddrFromAddrPort(netip.MustParseAddrPort(local))
	r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, la))
	if peer != nil {
		r.TLS = &tls.ConnectionState{ServerName: "outbound_.8080_._.svc", PeerCertificates: []*x509.Certificate{peer}}
	}
	return filter.NewStream(r, http.Header{})
}

// Istio's ALLOW policy: principal cluster.local/ns/default/sa/client on
// port 8080, GET only.
const allowClientGET = `
rules:
  action: ALLOW
  policies:
    ns[default]-policy[allow-client]-rule[0]:
      permissions:
      - andRules:
          rules:
          - orRules: {rules: [{header: {name: ":method", stringMatch: {exact: GET}}}]}
          - orRules: {rules: [{destinationPort: 8080}]}
      principals:
      - andIds:
          ids:
          - orIds: {ids: [{authenticated: {principalName: {exact: "spiffe://cluster.local/ns/default/sa/client"}}}]}
`

// Istio's DENY policy on /admin and /admin/*.
const denyAdmin = `
rules:
  action: DENY
  policies:
    ns[default]-policy[deny-admin]-rule[0]:
      permissions:
      - andRules:
          rules:
          - orRules:
              rules:
              - urlPath: {path: {exact: /admin}}
              - urlPath: {path: {prefix: /admin/}}
      principals: [{andIds: {ids: [{any: true}]}}]
`

func TestHTTPFilterDecisions(t *testing.T) {
	reg := prometheus.NewRegistry()
	stats, err := NewStats(reg)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	fac := Factory{Stats: stats, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	newFilter := func(src string) filter.Filter {
		f, err := fac.New(anyOf(t, parseConfig(t, src)))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	deny, allow := newFilter(denyAdmin), newFilter(allowClientGET)
	client := peerCert(t, "spiffe://cluster.local/ns/default/sa/client")
	other := peerCert(t, "spiffe://cluster.local/ns/default/sa/other")

	for _, tc := range []struct {
		name   string
		s      *filter.Stream
		denied bool
	}{
		{"the named principal, GET", streamFor("GET", "/data?x=1", "127.0.0.2:8080", "127.0.0.1:5000", client), false},
		{"the named principal, POST", streamFor("POST", "/data", "127.0.0.2:8080", "127.0.0.1:5000", client), true},
		{"another principal", streamFor("GET", "/data", "127.0.0.2:8080", "127.0.0.1:5000", other), true},
		{"plaintext: no principal", streamFor("GET", "/data", "127.0.0.2:8080", "127.0.0.1:5000", nil), true},
		{"another port", streamFor("GET", "/data", "127.0.0.2:9090", "127.0.0.1:5000", client), true},
		{"DENY beats ALLOW", streamFor("GET", "/admin/users", "127.0.0.2:8080", "127.0.0.1:5000", client), true},
	} {
		st := filter.Continue
		for _, f := range []filter.Filter{deny, allow} {
			if st = f.DecodeHeaders(tc.s); st == filter.Stop {
				break
			}
		}
		if got := st == filter.Stop; got != tc.denied {
			t.Errorf("%s: denied %v, want %v", tc.name, got, tc.denied)
			continue
		}
		if a, reply := tc.s.Answer(); tc.denied && (a != filter.AnsweredLocalReply || reply.Status != 403 || reply.Body != DeniedBody || reply.Flag != "RBAC") {
			t.Errorf("%s: answer %v %+v, want 403 %q flag RBAC", tc.name, a, reply, DeniedBody)
		}
	}
	if got := counterValue(t, stats.denied.WithLabelValues("ALLOW", "none")); got != 4 {
		t.Errorf("ALLOW denials counted: %v, want 4", got)
	}
	if got := counterValue(t, stats.denied.WithLabelValues("DENY", "ns[default]-policy[deny-admin]-rule[0]")); got != 1 {
		t.Errorf("DENY denials counted: %v, want 1", got)
	}
	if !strings.Contains(logs.String(), `msg="request denied"`) || !strings.Contains(logs.String(), "details=rbac_access_denied_matched_policy[ns[default]-policy[deny-admin]-rule[0]]") {
		t.Errorf("debug log lacks the denial details:\n%s", logs.String())
	}
}

// TestHTTPFilterRequest: what the filter reads of the stream — remote
// address from the connection manager, SNI, destination, the JWT payload —
// reaches the policies.
func TestHTTPFilterRequest(t *testing.T) {
	fac := Factory{}
	f, err := fac.New(anyOf(t, parseConfig(t, `
rules:
  policies:
    everything-checked:
      permissions:
      - andRules:
          rules:
          - destinationIp: {addressPrefix: 127.0.0.2, prefixLen: 32}
          - requestedServerName: {exact: outbound_.8080_._.svc}
          - urlPath: {path: {exact: /p}}
      principals:
      - andIds:
          ids:
          - remoteIp: {addressPrefix: 10.1.0.0, prefixLen: 16}
          - directRemoteIp: {addressPrefix: 127.0.0.1, prefixLen: 32}
          - metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: payload}, {key: iss}], value: {stringMatch: {exact: "https://issuer.example"}}}
`)))
	if err != nil {
		t.Fatal(err)
	}
	peer := peerCert(t, "spiffe://cluster.local/ns/default/sa/client")
	s := streamFor("GET", "/p?q", "127.0.0.2:8080", "127.0.0.1:5000", peer)
	if f.DecodeHeaders(s) != filter.Stop {
		t.Fatal("allowed without the remote IP and the JWT payload")
	}
	s = streamFor("GET", "/p?q", "127.0.0.2:8080", "127.0.0.1:5000", peer)
	s.RemoteIP = netip.MustParseAddr("10.1.2.3")
	s.SetMetadata(jwtFilterName, map[string]any{"payload": map[string]any{"iss": "https://issuer.example"}})
	if f.DecodeHeaders(s) != filter.Continue {
		t.Fatal("denied a request every condition matches")
	}
}

// TestHTTPFilterAuditAndDryRun: AUDIT (LOG) never refuses, logs and counts
// the requests it matches; dry-run (shadow) rules count what they would
// refuse.
func TestHTTPFilterAuditAndDryRun(t *testing.T) {
	reg := prometheus.NewRegistry()
	stats, err := NewStats(reg)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	fac := Factory{Stats: stats, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	audit, err := fac.New(anyOf(t, parseConfig(t, `
rules:
  action: LOG
  policies:
    ns[default]-policy[audit-writes]-rule[0]:
      permissions: [{header: {name: ":method", stringMatch: {exact: POST}}}]
      principals: [{any: true}]
`)))
	if err != nil {
		t.Fatal(err)
	}
	dry, err := fac.New(anyOf(t, parseConfig(t, `
shadowRulesStatPrefix: istio_dry_run_allow_
shadowRules:
  action: ALLOW
  policies:
    ns[default]-policy[only-get]-rule[0]:
      permissions: [{header: {name: ":method", stringMatch: {exact: GET}}}]
      principals: [{any: true}]
`)))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"GET", "POST", "POST"} {
		s := streamFor(m, "/x", "127.0.0.2:8080", "127.0.0.1:5000", nil)
		if audit.DecodeHeaders(s) != filter.Continue || dry.DecodeHeaders(s) != filter.Continue {
			t.Fatalf("%s refused: AUDIT and dry-run never refuse", m)
		}
	}
	if got := counterValue(t, stats.logged.WithLabelValues("LOG", "ns[default]-policy[audit-writes]-rule[0]")); got != 2 {
		t.Errorf("audited: %v, want 2", got)
	}
	if got := counterValue(t, stats.shadowDenied.WithLabelValues("ALLOW", "none")); got != 2 {
		t.Errorf("dry-run denials: %v, want 2", got)
	}
	if n := strings.Count(logs.String(), `msg="request audited"`); n != 2 || !strings.Contains(logs.String(), "method=POST path=/x") {
		t.Errorf("audit log lines: %d, want 2 with method and path:\n%s", n, logs.String())
	}
}

// TestHTTPFilterPerRoute: a route's RBACPerRoute replaces the listener's
// rules; one without rbac turns the filter off on that route.
func TestHTTPFilterPerRoute(t *testing.T) {
	fac := Factory{}
	f, err := fac.New(anyOf(t, parseConfig(t, `{rules: {action: ALLOW}}`))) // denies everything
	if err != nil {
		t.Fatal(err)
	}
	off, err := fac.ParsePerRoute(anyOf(t, &rbachttpv3.RBACPerRoute{}))
	if err != nil {
		t.Fatal(err)
	}
	s := streamFor("GET", "/", "127.0.0.2:8080", "127.0.0.1:5000", nil)
	if f.DecodeHeaders(s) != filter.Stop {
		t.Fatal("ALLOW without policies allowed a request")
	}
	s = streamFor("GET", "/", "127.0.0.2:8080", "127.0.0.1:5000", nil)
	s.PerRoute = off
	if f.DecodeHeaders(s) != filter.Continue {
		t.Fatal("a route with an empty RBACPerRoute still enforces the listener's rules")
	}
	if _, err := fac.New(anyOf(t, parseConfig(t, `{matcher: {}}`))); err == nil {
		t.Error("a config the engine cannot enforce was accepted")
	}
	if _, err := fac.New(nil); err == nil {
		t.Error("a filter without typed_config was accepted")
	}
}

func counterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestHTTPFilterOverTLS: over a real TLS connection, the filter takes the
// principal from the client certificate net/http puts in r.TLS, and the
// destination from the connection.
func TestHTTPFilterOverTLS(t *testing.T) {
	f, err := Factory{}.New(anyOf(t, parseConfig(t, `
rules:
  policies:
    ns[default]-policy[allow-client]-rule[0]:
      permissions: [{any: true}]
      principals: [{authenticated: {principalName: {exact: "spiffe://cluster.local/ns/default/sa/client"}}}]
`)))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := filter.NewStream(r, w.Header())
		if f.DecodeHeaders(s) == filter.Stop {
			w.WriteHeader(http.StatusForbidden)
		}
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	srv.StartTLS()
	defer srv.Close()

	get := func(id string) int {
		cert, key := selfSigned(t, id)
		tr := srv.Client().Transport.(*http.Transport).Clone()
		tr.TLSClientConfig.Certificates = []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(srv.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("spiffe://cluster.local/ns/default/sa/client"); code != 200 {
		t.Errorf("the allowed principal got %d", code)
	}
	if code := get("spiffe://cluster.local/ns/default/sa/other"); code != 403 {
		t.Errorf("another principal got %d", code)
	}
}

func selfSigned(t testing.TB, id string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(id)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{u}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}
