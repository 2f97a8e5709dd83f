package testenv

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// DNSServer is an authoritative DNS server (github.com/miekg/dns) on a
// loopback ephemeral port, UDP and TCP, whose A and AAAA records a test
// sets and changes while it runs. Names it has no record of answer
// NXDOMAIN; Fail makes every query answer SERVFAIL. Safe for concurrent
// use.
type DNSServer struct {
	// Addr is the host:port both transports listen on.
	Addr string

	mu      sync.Mutex
	records map[string][]netip.Addr // by lowercased FQDN
	ttl     uint32
	fail    bool
	queries int
}

// StartDNSServer starts a DNS server whose records have the given TTL;
// it stops at the end of the test.
func StartDNSServer(t testing.TB, ttl time.Duration) *DNSServer {
	t.Helper()
	s := &DNSServer{records: map[string][]netip.Addr{}, ttl: uint32(ttl / time.Second)}
	// UDP and TCP on one port: the port the kernel gives the UDP socket
	// may be taken for TCP (by another test's connection); try others.
	var (
		pc  net.PacketConn
		ln  net.Listener
		err error
	)
	for range 20 {
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatalf("dns server: %v", err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatalf("dns server: tcp on the UDP port, 20 ports tried: %v", err)
	}
	s.Addr = pc.LocalAddr().String()
	udp := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.serve)}
	tcp := &dns.Server{Listener: ln, Handler: dns.HandlerFunc(s.serve)}
	var wg sync.WaitGroup
	started := make(chan struct{}, 2)
	udp.NotifyStartedFunc = func() { started <- struct{}{} }
	tcp.NotifyStartedFunc = func() { started <- struct{}{} }
	wg.Go(func() { udp.ActivateAndServe() })
	wg.Go(func() { tcp.ActivateAndServe() })
	<-started
	<-started
	t.Cleanup(func() {
		udp.Shutdown()
		tcp.Shutdown()
		wg.Wait()
	})
	return s
}

// Set makes host resolve to addrs (none: NXDOMAIN).
func (s *DNSServer) Set(host string, addrs ...netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[dns.Fqdn(strings.ToLower(host))] = addrs
}

// Fail makes every query answer SERVFAIL (true) or be answered again
// (false).
func (s *DNSServer) Fail(fail bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = fail
}

// Queries is the number of queries answered so far.
func (s *DNSServer) Queries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries
}

func (s *DNSServer) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	s.mu.Lock()
	s.queries++
	fail := s.fail
	var addrs []netip.Addr
	found := false
	if len(req.Question) == 1 {
		addrs, found = s.records[strings.ToLower(req.Question[0].Name)]
	}
	ttl := s.ttl
	s.mu.Unlock()
	switch {
	case fail:
		m.Rcode = dns.RcodeServerFailure
	case !found || len(addrs) == 0:
		m.Rcode = dns.RcodeNameError
	default:
		q := req.Question[0]
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: ttl}
		for _, a := range addrs {
			switch {
			case q.Qtype == dns.TypeA && a.Is4():
				hdr.Rrtype = dns.TypeA
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.IP(a.AsSlice())})
			case q.Qtype == dns.TypeAAAA && a.Is6():
				hdr.Rrtype = dns.TypeAAAA
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: net.IP(a.AsSlice())})
			}
		}
	}
	w.WriteMsg(m)
}
