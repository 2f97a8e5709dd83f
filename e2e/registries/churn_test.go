package registries

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/internal/testenv"
)

// Endpoint churn benchmarks: a registry with many endpoints changes one
// endpoint at a time, and each change is timed from just before the
// registry write to every connected sidecar having ACKed the new endpoints
// (as the control plane's /debug/proxies reports each proxy's EDS ACK
// time). They are Go benchmarks, run only when asked:
//
//	go test -run '^$' -bench EndpointChurn -benchtime 100x ./e2e/registries
//
// Each iteration replaces one endpoint; -benchtime Nx sets how many, one
// every churnInterval (100x: a minute at 10% of 1,000 endpoints per
// minute). The setup (the registry, `weft serve`, the sidecars) and the
// pacing are outside the timer. WEFT_CP_PROFILE=FILE also writes a CPU
// profile of the control plane over the first 10 s of churn.
// Reported: ack-p50-ms, ack-p99-ms, ack-max-ms (registry write to the
// last sidecar's ACK), cp-cpu-ms/change and cp-rss-MB of the control
// plane process, push-rounds/change (the control plane's push rounds —
// every connected proxy regenerated — per change, from its
// weft_xds_pushes_total), push-round-ms (the mean wall time of one push
// round, from weft_xds_push_duration_seconds), changes/min (the rate
// achieved: 100 when the pacing holds), and non-eds-pushes, which must
// stay 0: an endpoint change is an EDS-only push.

const (
	churnSidecars = 10
	// churnInterval paces the changes: one every 600 ms is 100 a minute,
	// 10% of 1,000 endpoints per minute, so -benchtime 100x is one minute
	// of that churn.
	churnInterval = 600 * time.Millisecond
)

// pacer spaces changes churnInterval apart (start to start); its sleep is
// outside the measurement.
type pacer struct {
	every time.Duration
	next  time.Time
}

func newPacer(every time.Duration) *pacer { return &pacer{every: every} }

// wait sleeps until the next change is due.
func (p *pacer) wait() {
	if d := time.Until(p.next); d > 0 {
		time.Sleep(d)
	}
	p.next = time.Now().Add(p.every)
}

// sidecarFleet starts n weft-proxy sidecars on loopback connected to cp,
// with no listeners of their own: clients that receive every cluster's
// endpoints.
func sidecarFleet(b *testing.B, bin string, cp *controlPlane, n int) {
	b.Helper()
	for i := range n {
		name := fmt.Sprintf("client-%d", i)
		tok := cp.token(b, bin, "default", "client")
		cmd := exec.Command(filepath.Join(bin, "weft-proxy"), "--workload", name, "--namespace", "default",
			"--service-account", "client", "--ip", "127.0.0.1", "--outbound", "", "--admin-address", "127.0.0.1:0",
			"--xds-address", cp.XDS, "--root-cert", cp.Root, "--token-file", tok, "--log-level", "warn")
		startCmd(b, name, cmd)
	}
	eventually(b, 60*time.Second, "sidecars connected and synced", func() error {
		ps := proxies(b, cp)
		if len(ps) != n {
			return fmt.Errorf("%d of %d sidecars connected", len(ps), n)
		}
		for _, p := range ps {
			for _, ty := range p.Types {
				if ty.State != "SYNCED" && ty.State != "NOT SENT" {
					return fmt.Errorf("%s %s: %s", p.Node, ty.Type, ty.State)
				}
			}
		}
		return nil
	})
}

// quiesce waits until no proxy's ACKed versions have changed for 2 s:
// the registry's first sync has reached every sidecar before the clock
// starts.
func quiesce(b *testing.B, cp *controlPlane) {
	b.Helper()
	last, since := versions(proxies(b, cp)), time.Now()
	eventually(b, 60*time.Second, "the sidecars' versions steady for 2s", func() error {
		cur := versions(proxies(b, cp))
		if !maps.Equal(cur, last) {
			last, since = cur, time.Now()
		}
		if d := time.Since(since); d < 2*time.Second {
			return fmt.Errorf("last change %v ago", d.Round(time.Millisecond))
		}
		return nil
	})
}

type proxyStatus struct {
	Node  string
	Types []struct {
		Type, State, Current, Acked string
		AckedAt                     time.Time
	}
}

func proxies(b testing.TB, cp *controlPlane) []proxyStatus {
	code, body, err := httpGet(&http.Client{Timeout: 5 * time.Second}, "http://"+cp.Status+"/debug/proxies", nil)
	if err != nil || code != 200 {
		b.Fatalf("/debug/proxies: %d %v", code, err)
	}
	var out struct{ Proxies []proxyStatus }
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		b.Fatal(err)
	}
	return out.Proxies
}

// versions is each proxy's ACKed version per type: "node/TYPE" -> version.
func versions(ps []proxyStatus) map[string]string {
	out := map[string]string{}
	for _, p := range ps {
		for _, t := range p.Types {
			out[p.Node+"/"+t.Type] = t.Acked
		}
	}
	return out
}

// churnMeter times changes and collects the control plane's cost.
type churnMeter struct {
	b         *testing.B
	cp        *controlPlane
	lat       []time.Duration
	nonEDS    int
	quietEDS  int  // EDS versions that changed between changes
	quiet     bool // settled was called: report quietEDS
	cpu0      time.Duration
	rounds0   float64
	pushSec0  float64   // weft_xds_push_duration_seconds_sum
	first     time.Time // t0 of the first change
	lastT0    time.Time
	lastAcked map[string]string
}

func newChurnMeter(b *testing.B, cp *controlPlane) *churnMeter {
	m := &churnMeter{b: b, cp: cp, lastAcked: versions(proxies(b, cp))}
	m.cpu0 = cpuTime(b, cp.proc.cmd.Process.Pid)
	m.rounds0 = metric(b, cp, "weft_xds_pushes_total")
	m.pushSec0 = metric(b, cp, "weft_xds_push_duration_seconds_sum")
	if path := os.Getenv("WEFT_CP_PROFILE"); path != "" {
		// A CPU profile of the control plane over the first 10 s of churn.
		done := make(chan struct{})
		go func() {
			defer close(done)
			resp, err := http.Get("http://" + cp.Status + "/debug/pprof/profile?seconds=10")
			if err != nil {
				b.Logf("profile: %v", err)
				return
			}
			defer resp.Body.Close()
			f, err := os.Create(path)
			if err == nil {
				_, _ = io.Copy(f, resp.Body)
				f.Close()
			}
		}()
		b.Cleanup(func() { <-done })
	}
	return m
}

// waitAcked waits until every sidecar has ACKed an EDS version newer than
// before the change written at t0, and records the latency to the last
// ACK.
func (m *churnMeter) waitAcked(t0 time.Time) {
	m.b.Helper()
	if m.first.IsZero() {
		m.first = t0
	}
	m.lastT0 = t0
	deadline := time.Now().Add(30 * time.Second)
	for {
		ps := proxies(m.b, m.cp)
		cur := versions(ps)
		done := true
		var last time.Time
		for _, p := range ps {
			for _, t := range p.Types {
				k := p.Node + "/" + t.Type
				if t.Type != "EDS" {
					if cur[k] != m.lastAcked[k] && cur[k] != "" {
						m.nonEDS++
						m.lastAcked[k] = cur[k]
					}
					continue
				}
				if t.Acked == m.lastAcked[k] || t.State != "SYNCED" {
					done = false
					continue
				}
				if t.AckedAt.After(last) {
					last = t.AckedAt
				}
			}
		}
		if done {
			m.lastAcked = cur
			m.lat = append(m.lat, last.Sub(t0))
			return
		}
		if time.Now().After(deadline) {
			m.b.Fatalf("sidecars did not ACK an endpoint change within 30s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// settled records any version that changed since the last ACK while no
// registry change was written (an EDS one in quietEDS, reported as
// pod-eds-pushes: the pod writes around a Kubernetes change must not change
// endpoints), so that the next change is timed from a quiet state.
func (m *churnMeter) settled() {
	m.b.Helper()
	m.quiet = true
	for k, v := range versions(proxies(m.b, m.cp)) {
		if v == m.lastAcked[k] || v == "" {
			continue
		}
		if strings.HasSuffix(k, "/EDS") {
			m.quietEDS++
		} else {
			m.nonEDS++
		}
		m.lastAcked[k] = v
	}
}

func (m *churnMeter) report() {
	b := m.b
	if len(m.lat) == 0 {
		return
	}
	slices.Sort(m.lat)
	q := func(p float64) float64 {
		return float64(m.lat[min(len(m.lat)-1, int(p*float64(len(m.lat))))]) / float64(time.Millisecond)
	}
	b.ReportMetric(q(0.5), "ack-p50-ms")
	b.ReportMetric(q(0.99), "ack-p99-ms")
	b.ReportMetric(float64(m.lat[len(m.lat)-1])/float64(time.Millisecond), "ack-max-ms")
	cpu := cpuTime(b, m.cp.proc.cmd.Process.Pid) - m.cpu0
	b.ReportMetric(float64(cpu)/float64(time.Millisecond)/float64(len(m.lat)), "cp-cpu-ms/change")
	b.ReportMetric(float64(rss(b, m.cp.proc.cmd.Process.Pid))/(1<<20), "cp-rss-MB")
	rounds := metric(b, m.cp, "weft_xds_pushes_total") - m.rounds0
	b.ReportMetric(rounds/float64(len(m.lat)), "push-rounds/change")
	if rounds > 0 {
		b.ReportMetric((metric(b, m.cp, "weft_xds_push_duration_seconds_sum")-m.pushSec0)*1000/rounds, "push-round-ms")
	}
	if len(m.lat) > 1 {
		b.ReportMetric(float64(len(m.lat)-1)/m.lastT0.Sub(m.first).Minutes(), "changes/min")
	}
	b.ReportMetric(float64(m.nonEDS), "non-eds-pushes")
	if m.quiet {
		b.ReportMetric(float64(m.quietEDS), "pod-eds-pushes")
	}
	b.ReportMetric(0, "ns/op") // wall time per op is the pacing, not a result
}

// metric is the value of an unlabelled metric on the control plane's
// /metrics.
func metric(b testing.TB, cp *controlPlane, name string) float64 {
	code, body, err := httpGet(&http.Client{Timeout: 5 * time.Second}, "http://"+cp.Status+"/metrics", nil)
	if err != nil || code != 200 {
		b.Fatalf("/metrics: %d %v", code, err)
	}
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				b.Fatalf("/metrics: %s: %v", name, err)
			}
			return f
		}
	}
	b.Fatalf("/metrics has no %s", name)
	return 0
}

// cpuTime is the user+system CPU time of a process (and its reaped
// children: none here).
func cpuTime(b testing.TB, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

// rss is a process's resident set size in bytes.
func rss(b testing.TB, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// BenchmarkConsulEndpointChurn: 100 Consul services × 10 instances
// (1,000 endpoints), one instance replaced per iteration (registered again
// on another address: one catalog change).
func BenchmarkConsulEndpointChurn(b *testing.B) {
	bin := binaries(b)
	c := testenv.Consul(b)
	const services, perService = 100, 10
	reg := func(id, name, addr string) {
		body := fmt.Sprintf(`{"ID":%q,"Name":%q,"Address":%q,"Port":8080,"Tags":["version=v1"],"Meta":{"protocol":"http"}}`, id, name, addr)
		req, _ := http.NewRequest(http.MethodPut, "http://"+c.Addr+"/v1/agent/service/register", strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("register %s: %v %v", id, err, resp)
		}
		resp.Body.Close()
	}
	addr := func(s, i int) string { return fmt.Sprintf("10.%d.%d.%d", 100+s/250, s%250, i%250+1) }
	for s := range services {
		for i := range perService {
			reg(fmt.Sprintf("svc%d-%d", s, i), fmt.Sprintf("svc%d", s), addr(s, i))
		}
	}
	cfg := b.TempDir()
	cp := serveOn(b, bin, "127.0.0.1", "--config", cfg, "--consul", c.Addr)
	sidecarFleet(b, bin, cp, churnSidecars)
	quiesce(b, cp) // every sidecar has every service's endpoints before the clock starts
	m := newChurnMeter(b, cp)
	pace := newPacer(churnInterval)
	next := make([]int, services)
	for s := range next {
		next[s] = perService
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// One instance moves to a new address: the instance is replaced
		// in one catalog change.
		s := i % services
		id := fmt.Sprintf("svc%d-%d", s, next[s]%perService)
		b.StopTimer()
		pace.wait()
		b.StartTimer()
		t0 := time.Now()
		reg(id, fmt.Sprintf("svc%d", s), addr(s, next[s]))
		next[s]++
		m.waitAcked(t0)
	}
	b.StopTimer()
	m.report()
}
