package dataplane

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"weft.dev/weft/internal/xds/contract"
)

// BenchmarkForwardHTTP1 measures one inbound proxy hop as bench/run.sh's
// one-hop scenario does: keep-alive HTTP/1.1 client → proxy listener →
// HTTP/1.1 upstream answering 1 KiB, all over real loopback sockets.
func BenchmarkForwardHTTP1(b *testing.B) {
	body := strings.Repeat("x", 1024)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, body)
	})}
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(ln) })
	b.Cleanup(func() { srv.Close(); wg.Wait() })

	d := newDataplane(b, contract.Identity{WorkloadName: "bench", Namespace: "default"}, nil)
	mustApply(b, d, resourcesAny(staticCluster(b, "inbound|8080||", ln.Addr().String()),
		httpListener(b, "in", core.TrafficDirection_INBOUND, "",
			routeConfig("inbound|8080||", vhost("inbound|http|8080", []string{"*"}, toCluster("default", prefixMatch("/"), "inbound|8080||"))))))
	url := "http://" + d.ListenerAddr("in").String() + "/?size=1024"

	for _, par := range []int{1, 16} {
		b.Run(map[int]string{1: "serial", 16: "parallel16"}[par], func(b *testing.B) {
			tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr}
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
			req, _ := http.NewRequest("GET", url, nil)
			req.Host = "bench"
			get(req) // warm both connection pools
			b.ReportAllocs()
			b.ResetTimer()
			if par == 1 {
				for b.Loop() {
					get(req)
				}
				return
			}
			b.SetParallelism(par / 2) // GOMAXPROCS=2 on the bench box: 16 goroutines
			b.RunParallel(func(pb *testing.PB) {
				req, _ := http.NewRequest("GET", url, nil)
				req.Host = "bench"
				for pb.Next() {
					get(req)
				}
			})
		})
	}
}
