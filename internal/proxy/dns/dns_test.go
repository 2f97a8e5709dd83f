package dns_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	"weft.dev/weft/internal/proxy/dns"
	"weft.dev/weft/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestClientAgainstServer: the client's queries, answered by a real DNS
// server implementation (github.com/miekg/dns): A, AAAA, both, the TTL,
// a name that does not exist, a failing server then one that answers.
func TestClientAgainstServer(t *testing.T) {
	srv := testenv.StartDNSServer(t, 7*time.Second)
	srv.Set("api.external.test", netip.MustParseAddr("127.0.0.7"), netip.MustParseAddr("127.0.0.8"), netip.MustParseAddr("::1"))
	c := &dns.Client{Servers: []string{srv.Addr}, Timeout: 2 * time.Second}
	ctx := t.Context()

	for _, tc := range []struct {
		network string
		want    []string
	}{
		{"ip4", []string{"127.0.0.7", "127.0.0.8"}},
		{"ip6", []string{"::1"}},
		{"ip", []string{"127.0.0.7", "127.0.0.8", "::1"}},
	} {
		addrs, ttl, err := c.LookupIP(ctx, tc.network, "API.external.test")
		if err != nil {
			t.Fatalf("%s: %v", tc.network, err)
		}
		var got []string
		for _, a := range addrs {
			got = append(got, a.String())
		}
		if !slices.Equal(got, tc.want) || ttl != 7*time.Second {
			t.Errorf("%s: got %v ttl %s, want %v ttl 7s", tc.network, got, ttl, tc.want)
		}
	}

	if _, _, err := c.LookupIP(ctx, "ip4", "missing.external.test"); !errors.Is(err, dns.ErrNotFound) {
		t.Errorf("missing name: err = %v, want ErrNotFound", err)
	}

	// A server that fails is skipped for the next one.
	bad := testenv.StartDNSServer(t, time.Second)
	bad.Fail(true)
	c2 := &dns.Client{Servers: []string{bad.Addr, srv.Addr}, Timeout: 2 * time.Second}
	if addrs, _, err := c2.LookupIP(ctx, "ip4", "api.external.test"); err != nil || len(addrs) != 2 {
		t.Errorf("failing server then a good one: %v, %v", addrs, err)
	}
	c3 := &dns.Client{Servers: []string{bad.Addr}, Timeout: 2 * time.Second}
	if _, _, err := c3.LookupIP(ctx, "ip4", "api.external.test"); err == nil || errors.Is(err, dns.ErrNotFound) {
		t.Errorf("failing server only: err = %v, want a server failure", err)
	}
}

// TestClientContext: a lookup to a server that never answers ends when
// its context does.
func TestClientContext(t *testing.T) {
	// A UDP socket nobody reads: queries go unanswered.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c := &dns.Client{Servers: []string{pc.LocalAddr().String()}, Timeout: time.Minute}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, _, err := c.LookupIP(ctx, "ip4", "api.external.test"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("lookup to a silent server: err = %v, want the context's deadline", err)
	}
}
