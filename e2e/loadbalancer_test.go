package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"weft.dev/weft/internal/echo"
	"weft.dev/weft/internal/localmesh"
)

// workloadEntriesYAML registers backends of service app, each with an
// optional locality ("" for none).
func workloadEntriesYAML(app string, port uint32, bs []Backend, localities []string) string {
	docs := []string{ServiceEntryYAML(app, port, "HTTP")}
	for i, b := range bs {
		y := b.WorkloadEntryYAML(app)
		if i < len(localities) && localities[i] != "" {
			y += "  locality: " + localities[i] + "\n"
		}
		docs = append(docs, y)
	}
	return strings.Join(docs, "---\n")
}

// backendOf is the registration of a workload m.Service started.
func backendOf(w *localmesh.Workload) Backend {
	return Backend{Name: w.Opts.Name, Version: w.Opts.Labels["version"], IP: w.Opts.IPs[0], Port: w.Opts.WorkloadPort}
}

// keyOwners sends one request per key (header x-user) and returns which
// workload answered each.
func keyOwners(t *testing.T, c *http.Client, client *localmesh.Workload, host string, keys int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := make([]string, keys)
	for i := range out {
		code, r, err := Get(ctx, c, client, host, "/", map[string]string{"x-user": fmt.Sprint("user-", i)})
		if err != nil || code != 200 {
			t.Fatalf("key %d: code %d err %v", i, code, err)
		}
		out[i] = r.Name
	}
	return out
}

// TestConsistentHashHeader: with consistentHash on a header, one value
// always lands on the same endpoint; adding a fourth endpoint moves only
// part of the keys. Ring hash (Istio's default algorithm) re-spreads every
// host's points when the host count changes, as Envoy's does, so it moves
// about 37%; maglev about 25%.
func TestConsistentHashHeader(t *testing.T) {
	for _, tc := range []struct {
		name, algo         string
		minMoved, maxMoved float64
	}{
		{"ring hash", "ringHash: {minimumRingSize: 1024}", 0.10, 0.50},
		{"maglev", "maglev: {tableSize: 65537}", 0.10, 0.40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMesh(t)
			ws := m.Service("hashed", "HTTP", "v1", "v1", "v1", "v1")
			bs := make([]Backend, len(ws))
			for i, w := range ws {
				bs[i] = backendOf(w)
			}
			m.WriteConfig("hashed-services.yaml", workloadEntriesYAML("hashed", 8080, bs[:3], nil))
			m.WriteConfig("hashed-dr.yaml", `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: hashed, namespace: default}
spec:
  host: hashed
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpHeaderName: x-user
        `+tc.algo+"\n")
			client := m.Client("client")
			c := newClient()
			m.WaitLoaded(0, 3)
			Eventually(t, 10*time.Second, "hashing on x-user with three endpoints", func() error {
				got := Tally(t, c, client, "hashed", map[string]string{"x-user": "alice"}, 20, byName)
				if len(got) != 1 {
					return fmt.Errorf("alice went to %v", got)
				}
				for _, o := range keyOwners(t, c, client, "hashed", 50) {
					if o == ws[3].Opts.Name {
						return fmt.Errorf("a key went to the unregistered endpoint")
					}
				}
				return nil
			})

			for _, user := range []string{"alice", "bob"} {
				got := Tally(t, c, client, "hashed", map[string]string{"x-user": user}, 1000, byName)
				if len(got) != 1 {
					t.Fatalf("1000 requests for %s spread over %v, want one endpoint", user, got)
				}
				t.Logf("%s: %v", user, got)
			}
			before := keyOwners(t, c, client, "hashed", 200)
			spread := map[string]int{}
			for _, o := range before {
				spread[o]++
			}
			if len(spread) != 3 {
				t.Fatalf("200 keys over %v, want all three endpoints used", spread)
			}

			m.WriteConfig("hashed-services.yaml", workloadEntriesYAML("hashed", 8080, bs, nil))
			m.WaitLoaded(0, 4)
			var after []string
			Eventually(t, 10*time.Second, "the fourth endpoint taking keys", func() error {
				after = keyOwners(t, c, client, "hashed", 200)
				for _, o := range after {
					if o == ws[3].Opts.Name {
						return nil
					}
				}
				return fmt.Errorf("no key on %s yet", ws[3].Opts.Name)
			})
			moved, toNew := 0, 0
			for i := range before {
				if before[i] != after[i] {
					moved++
					if after[i] == ws[3].Opts.Name {
						toNew++
					}
				}
			}
			f := float64(moved) / float64(len(before))
			t.Logf("adding a fourth endpoint moved %d of %d keys (%.0f%%), %d of them to the new endpoint", moved, len(before), f*100, toNew)
			if f < tc.minMoved || f > tc.maxMoved {
				t.Errorf("moved %.0f%% of keys, want %.0f%%..%.0f%%", f*100, tc.minMoved*100, tc.maxMoved*100)
			}
		})
	}
}

// getWithCookie sends one request with cookies and returns the answering
// workload and the response's Set-Cookie values.
func getWithCookie(ctx context.Context, c *http.Client, w *localmesh.Workload, host string, cookies ...*http.Cookie) (echo.Reply, []string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+w.Outbound+"/", nil)
	if err != nil {
		return echo.Reply{}, nil, err
	}
	req.Host = host
	for _, ck := range cookies {
		req.AddCookie(ck)
	}
	resp, err := c.Do(req)
	if err != nil {
		return echo.Reply{}, nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return echo.Reply{}, nil, fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	var r echo.Reply
	if err := json.Unmarshal(body, &r); err != nil {
		return r, nil, err
	}
	return r, resp.Header.Values("Set-Cookie"), nil
}

// TestCookieAffinityAcrossSplit: consistentHash on a cookie with a ttl.
// The first response sets the cookie; requests carrying it stick to one
// endpoint of each subset of a 70/30 split. The split itself stays per
// request, as in Envoy and Istio (the weighted cluster choice does not use
// the hash), so a client sees exactly two endpoints, one per version, in
// the split's proportion.
func TestCookieAffinityAcrossSplit(t *testing.T) {
	m := NewMesh(t)
	ws := m.Service("sticky", "HTTP", "v1", "v1", "v2", "v2")
	m.WriteConfig("sticky.yaml", `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: sticky, namespace: default}
spec:
  host: sticky
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie: {name: session, path: /, ttl: 3600s}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: sticky, namespace: default}
spec:
  hosts: [sticky]
  http:
  - route:
    - {destination: {host: sticky, subset: v1}, weight: 70}
    - {destination: {host: sticky, subset: v2}, weight: 30}
`)
	client := m.Client("client")
	c := newClient()
	m.WaitLoaded(1, len(ws))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var cookie *http.Cookie
	Eventually(t, 10*time.Second, "a generated session cookie", func() error {
		_, sc, err := getWithCookie(ctx, c, client, "sticky")
		if err != nil {
			return err
		}
		if len(sc) != 1 {
			return fmt.Errorf("Set-Cookie %q", sc)
		}
		if !strings.Contains(sc[0], "Max-Age=3600") || !strings.Contains(sc[0], "Path=/") {
			return fmt.Errorf("Set-Cookie %q: want Max-Age=3600 and Path=/", sc[0])
		}
		ck, err := http.ParseSetCookie(sc[0])
		if err != nil {
			return err
		}
		cookie = ck
		return nil
	})
	t.Logf("generated cookie %s=%s", cookie.Name, cookie.Value)

	for _, ck := range []*http.Cookie{cookie, {Name: "session", Value: "another-user"}, {Name: "session", Value: "third-user"}} {
		byEndpoint := map[string]int{}
		byVer := map[string]int{}
		const n = 400
		for i := range n {
			r, sc, err := getWithCookie(ctx, c, client, "sticky", ck)
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			if len(sc) != 0 {
				t.Fatalf("request %d with the cookie got Set-Cookie %q", i, sc)
			}
			byEndpoint[r.Name]++
			byVer[r.Version]++
		}
		t.Logf("cookie %s: %v", ck.Value, byEndpoint)
		if len(byEndpoint) != 2 || byVer["v1"] == 0 || byVer["v2"] == 0 {
			t.Errorf("cookie %s reached %v, want one v1 and one v2 endpoint", ck.Value, byEndpoint)
		}
		if share := float64(byVer["v1"]) / n; share < 0.6 || share > 0.8 {
			t.Errorf("cookie %s: v1 share %.2f, want about 0.70", ck.Value, share)
		}
	}
}

// slowBackend is a plain HTTP server (no sidecar) that answers like the
// echo app after a fixed delay, counting requests; the mesh reaches it
// directly at its registered address.
type slowBackend struct {
	addr  *net.TCPAddr
	mu    sync.Mutex
	count int
}

func startSlowBackend(t *testing.T, ip string, delay time.Duration) *slowBackend {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	sb := &slowBackend{addr: l.Addr().(*net.TCPAddr)}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sb.mu.Lock()
		sb.count++
		sb.mu.Unlock()
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(echo.Reply{Name: "slow", Version: "v1", Method: r.Method, Path: r.URL.Path})
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return sb
}

func (sb *slowBackend) requests() int {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.count
}

// TestLeastRequestAvoidsSlowEndpoint: four fast echo endpoints and one
// that takes 200ms per request, 8 concurrent clients. Round robin gives the
// slow one its fifth regardless; LEAST_REQUEST (Envoy's power of two
// choices on requests in flight, drawn with replacement) sends it clearly
// fewer: about the 1/25 of draws where both choices are the slow one.
func TestLeastRequestAvoidsSlowEndpoint(t *testing.T) {
	m := NewMesh(t)
	ws := m.Service("mixed", "HTTP", "v1", "v1", "v1", "v1")
	slow := startSlowBackend(t, nextIP(), 200*time.Millisecond)
	bs := []Backend{{Name: "mixed-slow", Version: "v1", IP: slow.addr.IP.String(), Port: uint32(slow.addr.Port), Plain: true}}
	for _, w := range ws {
		bs = append(bs, backendOf(w))
	}
	m.WriteConfig("mixed-services.yaml", workloadEntriesYAML("mixed", 8080, bs, nil))
	client := m.Client("client")
	c := newClient()

	run := func(policy string) float64 {
		m.WriteConfig("mixed-dr.yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: mixed, namespace: default}
spec:
  host: mixed
  trafficPolicy:
    loadBalancer: {simple: %s}
`, policy))
		Eventually(t, 10*time.Second, "cluster policy "+policy, func() error {
			// ROUND_ROBIN is lb_policy's zero value: absent from the dump.
			if strings.Contains(adminGet(t, client, "/config_dump"), "LEAST_REQUEST") != (policy == "LEAST_REQUEST") {
				return fmt.Errorf("not applied yet")
			}
			return nil
		})
		Eventually(t, 10*time.Second, "all endpoints reachable", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			seen := map[string]bool{}
			for range 50 {
				code, r, err := Get(ctx, c, client, "mixed", "/", nil)
				if err != nil || code != 200 {
					return fmt.Errorf("code %d err %v", code, err)
				}
				seen[r.Name] = true
			}
			if len(seen) != len(bs) {
				return fmt.Errorf("reached %v", seen)
			}
			return nil
		})
		start := slow.requests()
		const workers, perWorker = 8, 60
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range perWorker {
					if code, _, err := Get(ctx, c, client, "mixed", "/", nil); err != nil || code != 200 {
						errs <- fmt.Errorf("code %d err %v", code, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("%s: %v", policy, err)
		}
		share := float64(slow.requests()-start) / (workers * perWorker)
		t.Logf("%s: the slow endpoint got %.1f%% of %d requests", policy, share*100, workers*perWorker)
		return share
	}
	rr := run("ROUND_ROBIN")
	lr := run("LEAST_REQUEST")
	if rr < 0.15 {
		t.Errorf("round robin gave the slow endpoint %.1f%%, want about a fifth", rr*100)
	}
	if lr > rr/2 {
		t.Errorf("LEAST_REQUEST gave the slow endpoint %.1f%%, want clearly less than round robin's %.1f%%", lr*100, rr*100)
	}
}

// TestLocalityFailover: a client in r1/z1, two endpoints in its zone and
// two in r1/z2, a DestinationRule with outlier detection and no
// localityLbSetting: locality load balancing is on mesh-wide by default,
// as in Istio, and fails over only with outlier detection. (An explicit
// localityLbSetting: e2e/retry_localities_test.go.) All traffic stays in z1; when both z1 sidecars
// stop, outlier detection ejects them, z1's priority has no healthy share
// and traffic moves to z2; when they come back (new sidecars on the same
// addresses) and the ejection ends, traffic returns to z1.
func TestLocalityFailover(t *testing.T) {
	m := NewMesh(t)
	ws := m.Service("zonal", "HTTP", "v1", "v1", "v1", "v1")
	bs := make([]Backend, len(ws))
	for i, w := range ws {
		bs[i] = backendOf(w)
	}
	m.WriteConfig("zonal-services.yaml", workloadEntriesYAML("zonal", 8080, bs, []string{"r1/z1", "r1/z1", "r1/z2", "r1/z2"}))
	m.WriteConfig("zonal-dr.yaml", `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: zonal, namespace: default}
spec:
  host: zonal
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 100ms
      baseEjectionTime: 2s
      maxEjectionPercent: 100
`)
	client := m.Workload(localmesh.WorkloadOptions{Name: "client", Labels: map[string]string{"app": "client", "version": "v1"}, Locality: "r1/z1"})
	c := newClient()
	local := map[string]bool{ws[0].Opts.Name: true, ws[1].Opts.Name: true}
	zone := func(name string) string {
		if local[name] {
			return "z1"
		}
		return "z2"
	}
	// byZone counts answers per zone over n requests; failures count as "error".
	byZone := func(n int) map[string]int {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out := map[string]int{}
		for range n {
			code, r, err := Get(ctx, c, client, "zonal", "/", nil)
			if err != nil || code != 200 {
				out["error"]++
				continue
			}
			out[zone(r.Name)]++
		}
		return out
	}
	Eventually(t, 10*time.Second, "all traffic in the client's zone", func() error {
		if got := byZone(50); got["z1"] != 50 {
			return fmt.Errorf("%v", got)
		}
		return nil
	})
	t.Logf("healthy: %v", byZone(200))

	for _, w := range ws[:2] {
		if err := w.StopProxy(); err != nil {
			t.Fatal(err)
		}
	}
	Eventually(t, 10*time.Second, "failover to z2", func() error {
		if got := byZone(50); got["z2"] != 50 {
			return fmt.Errorf("%v", got)
		}
		return nil
	})
	t.Logf("z1 down: %v", byZone(200))

	for _, w := range ws[:2] {
		o := w.Opts
		o.OutboundPort, o.AdminPort, o.AppAddress = 0, 0, ""
		nw := m.Workload(o)
		Eventually(t, 10*time.Second, o.Name+" back", func() error {
			if !nw.Serving() {
				return fmt.Errorf("not serving")
			}
			return nil
		})
	}
	Eventually(t, 15*time.Second, "traffic back in z1", func() error {
		if got := byZone(50); got["z1"] != 50 {
			return fmt.Errorf("%v", got)
		}
		return nil
	})
	t.Logf("z1 recovered: %v", byZone(200))
}

// TestWarmup: with warmup (Envoy slow start) of 8s, an endpoint added to a
// cluster whose other endpoint is past its warmup gets about 10% of its
// weight at first (minimumPercent's default), so ~1/11 of the traffic
// instead of half, and its full share once the window has passed.
func TestWarmup(t *testing.T) {
	const window = 8 * time.Second
	m := NewMesh(t)
	ws := m.Service("warm", "HTTP", "v1", "v2")
	bs := []Backend{backendOf(ws[0]), backendOf(ws[1])}
	m.WriteConfig("warm-services.yaml", workloadEntriesYAML("warm", 8080, bs[:1], nil))
	m.WriteConfig("warm-dr.yaml", `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: warm, namespace: default}
spec:
  host: warm
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      warmup: {duration: 8s}
`)
	client := m.Client("client")
	c := newClient()
	Eventually(t, 10*time.Second, "slow start configured", func() error {
		if !strings.Contains(adminGet(t, client, "/config_dump"), "slowStartWindow") {
			return fmt.Errorf("not applied yet")
		}
		return nil
	})
	waitVersion(t, c, client, "warm", nil, "v1")
	// The first endpoint warms up with its new cluster; let it finish.
	select {
	case <-time.After(window + time.Second):
	case <-t.Context().Done():
		return
	}

	m.WriteConfig("warm-services.yaml", workloadEntriesYAML("warm", 8080, bs, nil))
	Eventually(t, 10*time.Second, "the new endpoint in the cluster", func() error {
		if got := Tally(t, c, client, "warm", nil, 20, byVersion); got["v2"] == 0 {
			return fmt.Errorf("%v", got)
		}
		return nil
	})
	early := Tally(t, c, client, "warm", nil, 300, byVersion)
	t.Logf("first second of warmup: %v", early)
	if f := float64(early["v2"]) / 300; f > 0.3 {
		t.Errorf("warming endpoint got %.0f%% at first, want about 10%% (not 50%%)", f*100)
	}
	Eventually(t, 2*window, "full share after the warmup window", func() error {
		got := Tally(t, c, client, "warm", nil, 200, byVersion)
		if f := float64(got["v2"]) / 200; f < 0.4 {
			return fmt.Errorf("%v", got)
		}
		return nil
	})
}
