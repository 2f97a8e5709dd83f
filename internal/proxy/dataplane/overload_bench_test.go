package dataplane

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkSlowLoris measures normal traffic's latency through a
// listener — keep-alive HTTP/1.1 requests from 4 clients, each with its
// connection — with no attack and while 1,000 slow-loris connections
// trickle request heads (re-dialling when closed; from a process of
// their own, this test binary run as TestSlowLorisAttackerProcess, so
// the attacker does not share the proxy's scheduler and heap), side by
// side in one run: with the default limits (request_headers_timeout 10 s, no
// connection limit: all 1,000 are held), and with --max-connections 256
// (most are shed at once). It reports the latency percentiles (µs) and
// the attack connections the proxy held and shed, and how often the
// normal clients dialled (4, unless a connection of theirs was lost).
//
//	go test -run '^$' -bench BenchmarkSlowLoris -benchtime 4000x ./internal/proxy/dataplane
//
// (bench/slowloris.sh runs it and writes bench/results/slowloris.md.)
func BenchmarkSlowLoris(b *testing.B) {
	for _, bc := range []struct {
		name     string
		attack   int
		maxConns int
		kind     lorisKind
	}{
		{"quiet", 0, 0, lorisH1},
		{"attack-1000-held", 1000, 0, lorisH1},
		{"attack-1000-max-connections-256", 1000, 256, lorisH1},
		{"attack-h2-idle-1000", 1000, 0, lorisH2Idle},
		{"attack-h2-headers-1000", 1000, 0, lorisH2Headers},
	} {
		b.Run(bc.name, func(b *testing.B) {
			d, reg := limitedDataplane(b, Options{MaxConnections: bc.maxConns}, nil)
			addr := d.ListenerAddr("out").String()
			const clients = 4
			var dials atomic.Int64
			tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients,
				DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
					dials.Add(1)
					var d net.Dialer
					return d.DialContext(ctx, network, a)
				}}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			get := func() (time.Duration, error) {
				req, _ := http.NewRequest("GET", "http://"+addr+"/ok", nil)
				req.Host = "svc"
				start := time.Now()
				resp, err := hc.Do(req)
				if err != nil {
					return 0, err
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
				return time.Since(start), nil
			}
			// The clients' connections are open before the attack.
			var warm sync.WaitGroup
			for range clients {
				warm.Go(func() {
					if _, err := get(); err != nil {
						b.Error(err)
					}
				})
			}
			warm.Wait()
			if bc.attack > 0 {
				startAttacker(b, addr, bc.attack, bc.kind)
			}

			lat := make([]time.Duration, b.N)
			var failed int
			var mu sync.Mutex
			var wg sync.WaitGroup
			b.ResetTimer()
			for w := range clients {
				wg.Go(func() {
					for i := w; i < b.N; i += clients {
						dur, err := get()
						if err != nil {
							mu.Lock()
							if failed == 0 {
								b.Logf("first failure: %v", err)
							}
							failed++
							mu.Unlock()
							continue
						}
						lat[i] = dur
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			slices.Sort(lat)
			pct := func(p float64) float64 {
				return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds())
			}
			b.ReportMetric(pct(0.50), "p50-µs")
			b.ReportMetric(pct(0.99), "p99-µs")
			b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
			b.ReportMetric(float64(failed), "failed")
			b.ReportMetric(float64(dials.Load()), "client-dials")
			b.ReportMetric(float64(d.activeConns.Load()-clients), "attack-held")
			b.ReportMetric(counterFamily(b, reg, "envoy_listener_downstream_global_cx_overflow"), "attack-shed")
			b.ReportMetric(counterFamily(b, reg, "envoy_listener_http2_header_timeout"), "h2-timed-out")
		})
	}
}

// startAttacker runs this test binary as TestSlowLorisAttackerProcess
// against addr with conns connections of kind, waits until it has
// dialled them all, and stops it (closing its stdin) at cleanup.
func startAttacker(tb testing.TB, addr string, conns int, kind lorisKind) {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSlowLorisAttackerProcess$", "-test.v")
	cmd.Env = append(os.Environ(), "WEFT_SLOWLORIS_ADDR="+addr, "WEFT_SLOWLORIS_CONNS="+strconv.Itoa(conns),
		"WEFT_SLOWLORIS_KIND="+string(kind))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { io.Copy(io.Discard, stdout); cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == attackerReady {
				ready <- true
				return
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			tb.Fatal("the attacker process ended before it was ready")
		}
	case <-time.After(60 * time.Second):
		tb.Fatal("the attacker process did not dial its connections within 60 s")
	}
}

const attackerReady = "slow loris: all connections dialled"

// TestSlowLorisAttackerProcess is BenchmarkSlowLoris's attacker when run
// by startAttacker (WEFT_SLOWLORIS_ADDR set): it keeps
// WEFT_SLOWLORIS_CONNS slow-loris connections of WEFT_SLOWLORIS_KIND
// (lorisKind; h1 if unset) up against the address until its stdin
// closes. Otherwise it is skipped.
func TestSlowLorisAttackerProcess(t *testing.T) {
	addr := os.Getenv("WEFT_SLOWLORIS_ADDR")
	if addr == "" {
		t.Skip("the attacker process of BenchmarkSlowLoris; not a test on its own")
	}
	conns, err := strconv.Atoi(os.Getenv("WEFT_SLOWLORIS_CONNS"))
	if err != nil || conns <= 0 {
		t.Fatalf("WEFT_SLOWLORIS_CONNS %q: want a positive number", os.Getenv("WEFT_SLOWLORIS_CONNS"))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { io.Copy(io.Discard, os.Stdin); cancel() }() // the parent closed stdin (or died)
	kind := lorisKind(os.Getenv("WEFT_SLOWLORIS_KIND"))
	switch kind {
	case "":
		kind = lorisH1
	case lorisH1, lorisH2Idle, lorisH2Headers:
	default:
		t.Fatalf("WEFT_SLOWLORIS_KIND %q: want %s, %s or %s", kind, lorisH1, lorisH2Idle, lorisH2Headers)
	}
	attack := newSlowLoris(ctx, addr, conns, true, kind, nil)
	defer attack.stop()
	for attack.dialled.Load() < int64(conns) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println(attackerReady)
	<-ctx.Done()
}
