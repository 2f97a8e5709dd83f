package dataplane

import (
	"crypto/tls"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"weft.dev/weft/internal/proxy/proxytest"
)

func portRange(start, end int32) *listener.ListenerFilterChainMatchPredicate {
	return &listener.ListenerFilterChainMatchPredicate{Rule: &listener.ListenerFilterChainMatchPredicate_DestinationPortRange{
		DestinationPortRange: &typev3.Int32Range{Start: start, End: end},
	}}
}

func orMatch(rules ...*listener.ListenerFilterChainMatchPredicate) *listener.ListenerFilterChainMatchPredicate {
	return &listener.ListenerFilterChainMatchPredicate{Rule: &listener.ListenerFilterChainMatchPredicate_OrMatch{
		OrMatch: &listener.ListenerFilterChainMatchPredicate_MatchSet{Rules: rules},
	}}
}

func notMatch(r *listener.ListenerFilterChainMatchPredicate) *listener.ListenerFilterChainMatchPredicate {
	return &listener.ListenerFilterChainMatchPredicate{Rule: &listener.ListenerFilterChainMatchPredicate_NotMatch{NotMatch: r}}
}

func TestFilterDisabledPredicate(t *testing.T) {
	// Istio's shape for an inspector that runs on sniffed ports 80 and
	// 9000 only: disabled unless the port is one of them.
	only := notMatch(orMatch(portRange(80, 81), portRange(9000, 9001)))
	f, err := parsePredicate(only)
	if err != nil {
		t.Fatal(err)
	}
	for port, disabled := range map[uint16]bool{80: false, 9000: false, 81: true, 3306: true, 8999: true} {
		if got := f(port); got != disabled {
			t.Errorf("port %d: disabled = %v, want %v", port, got, disabled)
		}
	}
	in := inspector{on: true, disabled: f}
	if !in.runs(80) || in.runs(3306) {
		t.Errorf("inspector runs on 80: %v, on 3306: %v; want true, false", in.runs(80), in.runs(3306))
	}
	if (inspector{}).runs(80) {
		t.Error("an absent inspector runs")
	}

	for _, tc := range []struct {
		p    *listener.ListenerFilterChainMatchPredicate
		want string
	}{
		{&listener.ListenerFilterChainMatchPredicate{}, "rule: empty"},
		{portRange(90, 80), "destination_port_range: [90, 80) is not a port range"},
		{orMatch(portRange(80, 81)), "or_match.rules: want at least 2 rules, have 1"},
		{notMatch(orMatch(portRange(1, 2), portRange(5, 3))), "not_match.or_match.rules[1].destination_port_range: [5, 3) is not a port range"},
		{&listener.ListenerFilterChainMatchPredicate{Rule: &listener.ListenerFilterChainMatchPredicate_AnyMatch{}}, "any_match: must be true"},
	} {
		if _, err := parsePredicate(tc.p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parsePredicate(%v) = %v, want an error containing %q", tc.p, err, tc.want)
		}
	}
}

// TestClientHello reads a real client's ClientHello (its SNI and ALPN)
// off a socket and then completes the handshake from the bytes it read:
// the client sees one ordinary handshake.
func TestClientHello(t *testing.T) {
	ca := proxytest.NewMeshCA(t)
	cert := ca.Issue(t, "", time.Hour, "server.example")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, offered := range [][]string{{"h2", "http/1.1"}, {"istio", "http/1.1"}, nil} {
		clientErr := make(chan error, 1)
		go func() {
			c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool, ServerName: "server.example", NextProtos: offered})
			if err != nil {
				clientErr <- err
				return
			}
			defer c.Close()
			_, err = c.Write([]byte("ping"))
			clientErr <- err
		}()
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		head, err := inspect(c, 5*time.Second, false)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		sni, got, read := clientHello(c, head)
		c.SetReadDeadline(time.Time{})
		if !slices.Equal(got, offered) {
			t.Errorf("ALPN = %q, want %q", got, offered)
		}
		if sni != "server.example" {
			t.Errorf("SNI = %q, want server.example", sni)
		}
		srv := tls.Server(&serverConn{Conn: c, head: read}, &tls.Config{Certificates: []tls.Certificate{*cert}, NextProtos: []string{"http/1.1", "h2"}})
		c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(srv, buf); err != nil || string(buf) != "ping" {
			t.Errorf("after the ClientHello was read: %q, %v; want ping", buf, err)
		}
		if err := <-clientErr; err != nil {
			t.Errorf("client: %v", err)
		}
		srv.Close()
	}
}

// TestClientHelloNotTLS: bytes that are not a ClientHello yield no name
// or protocols and are all kept for the chain's own handshake to refuse.
func TestClientHelloNotTLS(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		b.Write([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5})
		b.Close()
	}()
	head := make([]byte, 2)
	if _, err := io.ReadFull(a, head); err != nil {
		t.Fatal(err)
	}
	sni, alpn, read := clientHello(a, head)
	if sni != "" || alpn != nil || len(read) != 10 {
		t.Errorf("sni %q, alpn %q, %d bytes read; want none, 10", sni, alpn, len(read))
	}
}
