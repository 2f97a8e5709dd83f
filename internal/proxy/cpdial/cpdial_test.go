package cpdial

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  string
	}{
		{in: "cp:15012", want: []string{"cp:15012"}},
		{in: "10.0.0.1:15012, 10.0.0.2:15012,[fd00::3]:15012", want: []string{"10.0.0.1:15012", "10.0.0.2:15012", "[fd00::3]:15012"}},
		{in: "a:1,,b:2,", want: []string{"a:1", "b:2"}},
		{in: "a:1,nope", err: `control plane address "nope": want host:port`},
		{in: "a:1,:15012", err: `":15012": want host:port`},
		{in: " , ", err: "no control plane address"},
	} {
		got, err := Split(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Split(%q) = %v, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("Split(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

// fakeDNS answers lookups from a table the test changes.
type fakeDNS struct {
	mu      sync.Mutex
	records map[string][]string
	lookups int
}

func (d *fakeDNS) lookup(_ context.Context, host string) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lookups++
	if r, ok := d.records[host]; ok {
		return slices.Clone(r), nil
	}
	return nil, errors.New("no such host")
}

func (d *fakeDNS) set(host string, ips ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.records[host] = ips
}

// TestReplicasRotate: a name with several records and an IP make one
// round; every address comes once a round, never twice in a row; names
// are resolved again each round, and a failed lookup keeps the last
// records.
func TestReplicasRotate(t *testing.T) {
	ctx := context.Background()
	dns := &fakeDNS{records: map[string][]string{"cp.weft": {"10.0.0.2", "10.0.0.1"}}}
	r, err := NewReplicas([]string{"cp.weft:15012", "10.0.0.9:15012", "10.0.0.1:15012"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	r.lookup = dns.lookup

	round := func() []string {
		got := []string{r.Next(ctx)} // starts a round: Len is now its length
		for range r.Len() - 1 {
			got = append(got, r.Next(ctx))
		}
		return got
	}
	all := []string{"10.0.0.1:15012", "10.0.0.2:15012", "10.0.0.9:15012"}
	var prev string
	var seq []string
	for i := range 4 {
		got := round()
		if s := slices.Sorted(slices.Values(got)); !slices.Equal(s, all) {
			t.Fatalf("round %d = %v, want each of %v once", i, got, all)
		}
		if got[0] == prev {
			t.Errorf("round %d starts with %s, the address just tried", i, got[0])
		}
		prev = got[len(got)-1]
		seq = append(seq, got...)
	}
	if dns.lookups != 4 {
		t.Errorf("%d lookups for 4 rounds, want 4", dns.lookups)
	}

	dns.set("cp.weft", "10.0.0.3") // a replica replaced in DNS
	got := round()
	if !slices.Contains(got, "10.0.0.3:15012") || slices.Contains(got, "10.0.0.2:15012") {
		t.Errorf("after the DNS change, round = %v", got)
	}
	dns.mu.Lock()
	delete(dns.records, "cp.weft") // the lookup now fails: the last records stay
	dns.mu.Unlock()
	got = round()
	if !slices.Contains(got, "10.0.0.3:15012") {
		t.Errorf("after a failed lookup, round = %v, want the last known records", got)
	}
}

// TestReplicasStartSpread: proxies do not all start at the first replica.
func TestReplicasStartSpread(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		r, err := NewReplicas([]string{"10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		seen[r.Next(context.Background())] = true
	}
	if len(seen) != 3 {
		t.Errorf("first addresses over 200 proxies: %v, want all 3", seen)
	}
}

// TestDialSocketOptions: connections to the control plane carry
// TCP_USER_TIMEOUT and TCP keepalive with the documented parameters.
func TestDialSocketOptions(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		for name, opt := range map[string][2]int{
			"SO_KEEPALIVE":     {unix.SOL_SOCKET, unix.SO_KEEPALIVE},
			"TCP_KEEPIDLE":     {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE},
			"TCP_KEEPINTVL":    {unix.IPPROTO_TCP, unix.TCP_KEEPINTVL},
			"TCP_USER_TIMEOUT": {unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT},
		} {
			v, err := unix.GetsockoptInt(int(fd), opt[0], opt[1])
			gerr = errors.Join(gerr, err)
			got[name] = v
		}
	}); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	want := map[string]int{"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 2, "TCP_KEEPINTVL": 1, "TCP_USER_TIMEOUT": 4000}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d", k, got[k], v)
		}
	}

	// A refused connection says where.
	addr := ln.Addr().String()
	ln.Close()
	if _, err := Dial(ctx, addr); err == nil || !strings.Contains(err.Error(), "control plane at "+addr) {
		t.Errorf("Dial to a closed port: %v", err)
	}
}
