//go:build unix

package dataplane

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"weft.dev/weft/internal/proxy/proxytest"
	"weft.dev/weft/internal/xds/contract"
)

// BenchmarkForwardMTLS measures what mutual TLS costs a forwarded request
// on kept-alive connections, beside the same request in plaintext, over
// real loopback sockets with 1 KiB responses:
//
//   - inbound: a client → the server proxy's inbound listener (STRICT
//     mutual TLS, or DISABLE) → the app: the server side's cost;
//   - outbound: a plaintext client → the client proxy's outbound listener →
//     a Go server requiring a client certificate (or plaintext): the
//     client side's cost;
//   - twohop: client → client proxy → server proxy → app, automatic
//     mutual TLS between the proxies (or plaintext): a mesh hop.
//
// Besides ns/op it reports cpu-ns/op, the process's CPU time (user and
// system, every goroutine: client, proxies, app) per request: with the
// client and app the same in both modes, the difference is the proxies'.
func BenchmarkForwardMTLS(b *testing.B) {
	ca := proxytest.NewMeshCA(b)
	body := strings.Repeat("x", 1024)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, body)
	})
	serverID, clientID := proxytest.SPIFFE("default", "reviews"), proxytest.SPIFFE("default", "productpage")

	// The app, in plaintext, and a TLS twin requiring a mesh client
	// certificate (the outbound case's upstream).
	app := serve(b, handler, nil)
	serverCert := ca.Issue(b, serverID, time.Hour)
	tlsApp := serve(b, handler, &tls.Config{Certificates: []tls.Certificate{*serverCert}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: ca.Pool, NextProtos: []string{"http/1.1"}})

	for _, side := range []string{"inbound", "outbound", "twohop"} {
		for _, mode := range []string{"plaintext", "mtls"} {
			mtls := mode == "mtls"
			var url string
			var c *http.Client
			switch side {
			case "inbound":
				server, _ := mtlsProxy(b, ca, "reviews", serverID, nil)
				m := proxytest.Disable
				if mtls {
					m = proxytest.Strict
				}
				mustApply(b, server, inboundResources(b, m, app))
				url = "://" + server.ListenerAddr("in").String() + "/"
				if mtls {
					url, c = "https"+url, mtlsClient(b, ca.Issue(b, clientID, time.Hour), false)
				} else {
					url, c = "http"+url, client(b, false)
				}
			case "outbound":
				cl, _ := mtlsProxy(b, ca, "productpage", clientID, nil)
				up := app
				if mtls {
					up = tlsApp
				}
				applyOutbound(b, cl, up, mtls, []string{serverID})
				url, c = "http://"+cl.ListenerAddr("out").String()+"/", client(b, false)
			case "twohop":
				server, _ := mtlsProxy(b, ca, "reviews", serverID, nil)
				m := proxytest.Disable
				if mtls {
					m = proxytest.Strict
				}
				mustApply(b, server, inboundResources(b, m, app))
				cl, _ := mtlsProxy(b, ca, "productpage", clientID, nil)
				applyOutbound(b, cl, server.ListenerAddr("in").String(), mtls, []string{serverID})
				url, c = "http://"+cl.ListenerAddr("out").String()+"/", client(b, false)
			}
			b.Run(side+"/"+mode, func(b *testing.B) { benchGets(b, c, url) })
		}
	}
}

// serve runs handler on loopback, over TLS when cfg is set, until the
// benchmark ends.
func serve(b *testing.B, h http.Handler, cfg *tls.Config) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	srv := &http.Server{Handler: h}
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(ln) })
	b.Cleanup(func() { srv.Close(); wg.Wait() })
	return ln.Addr().String()
}

// applyOutbound gives d an outbound listener routing Host "reviews" to
// the endpoint at addr: with automatic mutual TLS (the endpoint says
// tlsMode=istio) or in plaintext.
func applyOutbound(b *testing.B, d *Dataplane, addr string, mtls bool, sans []string) {
	c := edsCluster(b, twoHopsCluster, false, "reviews.default.svc.cluster.local")
	proxytest.AutoMTLS(b, c, proxytest.IstioUpstreamTLS("outbound_.9080_._.reviews.default.svc.cluster.local", sans, "http/1.1"))
	e := ep{Addr: addr}
	if mtls {
		e.TLSMode = contract.TLSModeIstio
	}
	mustApply(b, d, resourcesAny(c, cla(twoHopsCluster, e),
		routeConfig(contract.RouteHTTPProxy, vhost("reviews", []string{"reviews"}, toCluster("default", prefixMatch("/"), twoHopsCluster))),
		httpListener(b, "out", core.TrafficDirection_OUTBOUND, contract.RouteHTTPProxy, nil)))
}

// benchGets sends GETs to url from 16 goroutines (GOMAXPROCS=2 on the
// bench box) on kept-alive connections, reporting cpu-ns/op.
func benchGets(b *testing.B, c *http.Client, url string) {
	get := func(req *http.Request) {
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n != 1024 {
			b.Fatalf("got %d, %d bytes", resp.StatusCode, n)
		}
	}
	newReq := func() *http.Request {
		req, _ := http.NewRequest("GET", url, nil)
		req.Host = "reviews"
		return req
	}
	// Warm every connection pool the parallel run uses.
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() { get(newReq()) })
	}
	wg.Wait()
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		req := newReq()
		for pb.Next() {
			get(req)
		}
	})
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
