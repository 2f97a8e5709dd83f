package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/internal/echo"
	"weft.dev/weft/internal/localmesh"
	"weft.dev/weft/internal/proxy/proxytest"
	"weft.dev/weft/internal/testenv"
)

// startEcho serves an echo app named name at addr until the test ends.
func startEcho(t *testing.T, name, addr string) {
	t.Helper()
	s, err := echo.New(echo.Options{Name: name, Version: "v1", Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// dnsServiceEntry is an external service resolved by DNS: api.external.test
// on port 80, reached at the target port where its backends listen.
func dnsServiceEntry(targetPort int) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external-api, namespace: default}
spec:
  hosts: [api.external.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports:
  - {number: 80, name: http, protocol: HTTP, targetPort: %d}
`, targetPort)
}

// TestDNSResolvedServiceEntryFollowsDNSChange: a ServiceEntry with
// resolution DNS and no endpoints is a STRICT_DNS cluster the sidecar
// resolves itself, against a DNS server the test runs on loopback. The
// host's A record points at backend A, then at backend B: requests
// through the sidecar follow within the record's TTL (1 s; the mesh's
// refresh rate is 60 s). The DNS server then fails every query: the
// sidecar keeps the last good address, and requests still reach B.
func TestDNSResolvedServiceEntryFollowsDNSChange(t *testing.T) {
	m := NewMesh(t)
	dns := testenv.StartDNSServer(t, time.Second)

	ipA, ipB := nextIP(), nextIP()
	port, err := localmesh.FreePort(ipA)
	if err != nil {
		t.Fatal(err)
	}
	startEcho(t, "backend-a", net.JoinHostPort(ipA, strconv.Itoa(port)))
	startEcho(t, "backend-b", net.JoinHostPort(ipB, strconv.Itoa(port)))
	dns.Set("api.external.test", netip.MustParseAddr(ipA))
	m.WriteConfig("external.yaml", dnsServiceEntry(port))

	w := m.Workload(localmesh.WorkloadOptions{Name: "caller", Labels: map[string]string{"app": "caller", "version": "v1"},
		DNSServers: []string{dns.Addr}})
	c := newClient()
	reaches := func(want string) func() error {
		return func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			code, r, err := Get(ctx, c, w, "api.external.test", "/", nil)
			switch {
			case err != nil:
				return err
			case code != 200:
				return fmt.Errorf("status %d", code)
			case r.Name != want:
				return fmt.Errorf("answered by %s", r.Name)
			}
			return nil
		}
	}
	Eventually(t, 30*time.Second, "requests reach backend A", reaches("backend-a"))

	// The cluster is STRICT_DNS, its host resolved in the proxy: the
	// config dump shows the address, with the name as hostname.
	dump := adminGet(t, w, "/config_dump")
	for _, want := range []string{`"STRICT_DNS"`, `"hostname": "api.external.test"`, `"address": "` + ipA + `"`} {
		if !strings.Contains(dump, want) {
			t.Errorf("/config_dump lacks %s", want)
		}
	}

	dns.Set("api.external.test", netip.MustParseAddr(ipB))
	Eventually(t, 30*time.Second, "requests follow the DNS change to backend B", reaches("backend-b"))
	for range 5 {
		if err := reaches("backend-b")(); err != nil {
			t.Fatalf("after the change: %v", err)
		}
	}

	// DNS fails: the last good address stays.
	dns.Fail(true)
	q := dns.Queries()
	Eventually(t, 30*time.Second, "the sidecar asks the failing server again", func() error {
		if n := dns.Queries(); n < q+1 {
			return fmt.Errorf("%d queries since the failure began", n-q)
		}
		return nil
	})
	for range 5 {
		if err := reaches("backend-b")(); err != nil {
			t.Fatalf("while DNS fails: %v", err)
		}
	}
	stats := adminGet(t, w, "/stats/prometheus")
	for _, want := range []string{
		`envoy_cluster_update_success{envoy_cluster_name="outbound|80||api.external.test"}`,
		`envoy_cluster_update_failure{envoy_cluster_name="outbound|80||api.external.test"}`,
		`envoy_cluster_membership_healthy{envoy_cluster_name="outbound|80||api.external.test"} 1`,
	} {
		if !strings.Contains(stats, want) {
			t.Errorf("/stats/prometheus lacks %s", want)
		}
	}
}

// TestDNSResolvedServiceEntryTLSOrigination: Istio's egress TLS
// origination to a host resolved by DNS. The application calls
// http://api.external.test; a DestinationRule (tls.mode SIMPLE, sni,
// caCertificates) makes its sidecar open TLS to the address DNS gives,
// with that SNI, verifying the server's certificate for that name.
func TestDNSResolvedServiceEntryTLSOrigination(t *testing.T) {
	m := NewMesh(t)
	dns := testenv.StartDNSServer(t, time.Second)
	ca := proxytest.NewMeshCA(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca.RootPEM, 0o644); err != nil {
		t.Fatal(err)
	}

	// The external server: HTTPS only, for api.external.test.
	ip := nextIP()
	ln, err := tls.Listen("tcp", net.JoinHostPort(ip, "0"), &tls.Config{
		Certificates: []tls.Certificate{*ca.Issue(t, "", time.Hour, "api.external.test")}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sni := ""
		if r.TLS != nil {
			sni = r.TLS.ServerName
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(echo.Reply{Name: "tls-backend", Host: r.Host, Proto: "sni=" + sni})
	})}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	port := ln.Addr().(*net.TCPAddr).Port

	dns.Set("api.external.test", netip.MustParseAddr(ip))
	m.WriteConfig("external.yaml", dnsServiceEntry(port)+fmt.Sprintf(`---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: external-api, namespace: default}
spec:
  host: api.external.test
  trafficPolicy:
    tls: {mode: SIMPLE, sni: api.external.test, caCertificates: %s}
`, caFile))

	w := m.Workload(localmesh.WorkloadOptions{Name: "caller", Labels: map[string]string{"app": "caller", "version": "v1"},
		DNSServers: []string{dns.Addr}})
	c := newClient()
	var got echo.Reply
	Eventually(t, 30*time.Second, "a plaintext request reaches the HTTPS server", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		code, r, err := Get(ctx, c, w, "api.external.test", "/", nil)
		switch {
		case err != nil:
			return err
		case code != 200:
			return fmt.Errorf("status %d", code)
		}
		got = r
		return nil
	})
	if got.Name != "tls-backend" || got.Proto != "sni=api.external.test" || got.Host != "api.external.test" {
		t.Errorf("the server saw %+v, want TLS with SNI api.external.test and Host api.external.test", got)
	}

	// The certificate is checked, as Envoy checks it: its chain against
	// caCertificates, its names against subjectAltNames when the rule
	// gives them (an sni alone names nothing to verify, in Istio too). A
	// server certificate without the name asked for fails the handshake:
	// 503.
	m.WriteConfig("external.yaml", dnsServiceEntry(port)+fmt.Sprintf(`---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: external-api, namespace: default}
spec:
  host: api.external.test
  trafficPolicy:
    tls: {mode: SIMPLE, sni: api.external.test, caCertificates: %s, subjectAltNames: [other.external.test]}
`, caFile))
	Eventually(t, 30*time.Second, "a certificate for another name is refused", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		code, _, err := Get(ctx, c, w, "api.external.test", "/", nil)
		if err != nil {
			return err
		}
		if code != http.StatusServiceUnavailable {
			return fmt.Errorf("status %d, want 503", code)
		}
		return nil
	})
}
