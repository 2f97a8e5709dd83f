package dataplane

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"weft.dev/weft/internal/proxy/filter/cors"
	"weft.dev/weft/internal/proxy/filter/fault"
	"weft.dev/weft/internal/proxy/proxytest"
	"weft.dev/weft/internal/proxy/xdsclient"
	"weft.dev/weft/internal/xds/contract"
)

// ---- resource builders (internal/proxy/proxytest) ----------------------

var (
	mustAny       = proxytest.MustAny
	sockAddr      = proxytest.SockAddr
	httpListener  = proxytest.HTTPListener
	routeConfig   = proxytest.RouteConfig
	vhost         = proxytest.VHost
	prefixMatch   = proxytest.PrefixMatch
	toCluster     = proxytest.ToCluster
	toWeighted    = proxytest.ToWeighted
	edsCluster    = proxytest.EDSCluster
	staticCluster = proxytest.StaticCluster
	cla           = proxytest.CLA
	resources     = proxytest.Resources
	thresholds    = proxytest.Thresholds
	istioOD       = proxytest.IstioOutlierDetection
)

type ep = proxytest.Endpoint

const (
	httpProtocolOptionsKey = proxytest.HTTPProtocolOptionsKey
	faultFilterName        = fault.Name
	corsFilterName         = cors.Name

	// What the request path promises, spelled out (internal/proxy/forward).
	bodyTimeout          = "upstream request timeout" // Envoy's local reply body for UT
	retryBodyBufferLimit = 64 << 10                   // request bodies up to this size are replayed on a retry
	maxShadowsPerCluster = 128                        // shadow requests in flight per mirror cluster
	// The result label values of weft_shadow_requests_total.
	shadowCompleted    = "completed"
	shadowFailed       = "failed"
	shadowOverflow     = "overflow"
	shadowBodyOverflow = "body_overflow"
	shadowNoCluster    = "no_cluster"

	previousHostsPredicateName = "envoy.retry_host_predicates.previous_hosts"
	previousPrioritiesName     = "envoy.retry_priorities.previous_priorities"
)

// ---- runtime helpers ----------------------------------------------------

func newDataplane(t testing.TB, id contract.Identity, reg prometheus.Registerer) *Dataplane {
	t.Helper()
	d, err := New(Options{Identity: id, Metrics: reg})
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
	return d
}

func mustApply(t testing.TB, d *Dataplane, r *xdsclient.Resources) {
	t.Helper()
	if err := d.Apply(r); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

// echoUpstream is a real HTTP server that names itself in X-Upstream and echoes
// what it saw.
func echoUpstream(t testing.TB, name string, h2c bool) string {
	t.Helper()
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Upstream", name)
		w.Header().Set("X-Seen-Proto", r.Proto)
		w.Header().Set("X-Seen-Host", r.Host)
		w.Header().Set("X-Seen-Path", r.URL.RequestURI())
		w.Header().Set("X-Seen-Peer", r.Header.Get(contract.HeaderPeerMetadata))
		w.Header().Set("X-Seen-Request-Id", r.Header.Get("X-Request-Id"))
		w.Header().Set("X-Seen-Connection", r.Header.Get("Connection")+r.Header.Get("X-Hop"))
		w.Header().Set("X-Seen-Xfcc", strings.Join(r.Header.Values("X-Forwarded-Client-Cert"), ","))
		w.Header().Set("X-Seen-Xfp", r.Header.Get("X-Forwarded-Proto"))
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, name)
	}))
	if h2c {
		s.Config.Protocols = new(http.Protocols)
		s.Config.Protocols.SetUnencryptedHTTP2(true)
		s.Config.Protocols.SetHTTP1(true)
	}
	s.Start()
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

// client returns an HTTP client with its own transport, closed at cleanup.
func client(t testing.TB, h2c bool) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 100}
	if h2c {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

type result struct {
	code     int
	upstream string
	body     string
	header   http.Header
	close    bool // the response said Connection: close (net/http moves it out of header)
}

func do(t testing.TB, c *http.Client, method, url, host string, hdr map[string]string) result {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s (host %s): %v", method, url, host, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return result{code: resp.StatusCode, upstream: resp.Header.Get("X-Upstream"), body: string(b), header: resp.Header, close: resp.Close}
}

type (
	xdsResources = xdsclient.Resources
	protoMessage = proto.Message
)

type (
	listenerT = listener.Listener
	neturl    = url.URL
)

func parseURL(s string) (*url.URL, error) { return url.Parse(s) }

func itoa(i int) string { return strconv.Itoa(i) }

func newRegistry() *prometheus.Registry { return prometheus.NewRegistry() }

// counterValue sums istio_requests_total over the series whose labels
// include want.
func counterValue(t testing.TB, g prometheus.Gatherer, want map[string]string) float64 {
	t.Helper()
	return counterFamilyWith(t, g, "istio_requests_total", want)
}

// counterFamily sums the counters of the family name.
func counterFamily(t testing.TB, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	return counterFamilyWith(t, g, name, nil)
}

// counterFamilyWith sums the counters of the family name over the
// series whose labels include want.
func counterFamilyWith(t testing.TB, g prometheus.Gatherer, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue next
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}
