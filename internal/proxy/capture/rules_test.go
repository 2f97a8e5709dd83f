package capture

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs (run with -update to accept):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func mustRanges(t *testing.T, s string) Ranges {
	t.Helper()
	r, err := ParseRanges(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustPorts(t *testing.T, s string) []uint16 {
	t.Helper()
	p, err := ParsePorts(s)
	if err != nil {
		t.Fatal(err)
	}
	return p.Ports
}

// TestRulesGolden pins the ruleset for the defaults and for each knob, both
// families (testdata/<name>.golden, -update rewrites).
func TestRulesGolden(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Config)
	}{
		{"default", func(*Config) {}},
		{"ports", func(c *Config) { c.OutboundPort, c.InboundPort = 16001, 16006 }},
		{"proxy-uid-gid", func(c *Config) { c.ProxyUIDs, c.ProxyGIDs = []uint32{1337, 2000}, nil }},
		{"include-outbound-ranges", func(c *Config) {
			c.IncludeOutbound = mustRanges(t, "10.96.0.0/12, 192.168.0.0/16,fd00:10:96::/112")
		}},
		{"include-outbound-none", func(c *Config) { c.IncludeOutbound = Ranges{} }},
		{"include-outbound-loopback", func(c *Config) { c.IncludeOutbound = mustRanges(t, "127.0.0.0/8,10.0.0.0/8") }},
		{"exclude-outbound-ranges", func(c *Config) {
			c.ExcludeOutbound = mustRanges(t, "169.254.169.254,10.1.0.0/16,fd00::/8").Prefixes
		}},
		{"include-inbound-ports", func(c *Config) {
			c.IncludeInbound = Ports{Ports: mustPorts(t, "9080,8080")}
			c.ExcludeInbound = []uint16{9090} // ignored with a list of included ports, as in Istio
		}},
		{"include-inbound-none", func(c *Config) { c.IncludeInbound = Ports{} }},
		{"exclude-inbound-ports", func(c *Config) { c.ExcludeInbound = mustPorts(t, "22,9090,15000") }},
		{"exclude-outbound-ports", func(c *Config) { c.ExcludeOutboundPorts = mustPorts(t, "3306,6379") }},
		{"include-outbound-ports", func(c *Config) {
			c.IncludeOutbound = mustRanges(t, "10.96.0.0/12")
			c.IncludeOutboundPorts = mustPorts(t, "443")
		}},
		{"exclude-interfaces", func(c *Config) { c.ExcludeInterfaces = []string{"eth1", "net1"} }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.edit(&c)
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			got := "# IPv4\n" + Ruleset(c, IPv4) + "# IPv6\n" + Ruleset(c, IPv6)
			golden(t, tc.name+".golden", got)
		})
	}
}

// TestDefaultRulesMeaning checks the default ruleset for what capture
// promises, independently of the golden file.
func TestDefaultRulesMeaning(t *testing.T) {
	rs := Ruleset(Default(), IPv4)
	for _, want := range []string{
		"-A WEFT_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
		"-A WEFT_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
		"-A PREROUTING -p tcp -j WEFT_INBOUND",
		"-A WEFT_INBOUND -p tcp --dport 15020 -j RETURN",
		"-A WEFT_INBOUND -p tcp --dport 15021 -j RETURN",
		"-A WEFT_INBOUND -p tcp --dport 15090 -j RETURN",
		"-A WEFT_INBOUND -p tcp -j WEFT_IN_REDIRECT",
		"-A OUTPUT -j WEFT_OUTPUT",
		"-A WEFT_OUTPUT -m owner --uid-owner 1337 -j RETURN",
		"-A WEFT_OUTPUT -m owner --gid-owner 1337 -j RETURN",
		"-A WEFT_OUTPUT -d 127.0.0.1/32 -j RETURN",
		"-A WEFT_OUTPUT -j WEFT_REDIRECT",
	} {
		if !strings.Contains(rs, want+"\n") {
			t.Errorf("default ruleset lacks %q:\n%s", want, rs)
		}
	}
	// The owner RETURN must come before the final redirect, or the proxy
	// would capture its own connections.
	if strings.Index(rs, "--uid-owner 1337 -j RETURN") > strings.Index(rs, "-A WEFT_OUTPUT -j WEFT_REDIRECT") {
		t.Error("the proxy's RETURN comes after the redirect")
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "*", want: "*"},
		{in: "", want: ""},
		{in: "10.0.0.1, 10.0.0.0/8,10.0.0.0/8", want: "10.0.0.0/8,10.0.0.1/32"},
		{in: "10.1.2.3/8", want: "10.0.0.0/8"},
		{in: "::ffff:10.0.0.1", want: "10.0.0.1/32"},
		{in: "fd00::/8,fd00::1", want: "fd00::/8,fd00::1/128"},
		{in: "*,10.0.0.0/8", err: `must stand alone`},
		{in: "10.0.0.0/33", err: `"10.0.0.0/33"`},
		{in: "nope", err: `"nope": not a CIDR or an IP address`},
	} {
		r, err := ParseRanges(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseRanges(%q) = %v, want error with %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || r.String() != tc.want {
			t.Errorf("ParseRanges(%q) = %q, %v; want %q", tc.in, r, err, tc.want)
		}
	}
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "*", want: "*"},
		{in: "", want: ""},
		{in: "9090, 80,80", want: "80,9090"},
		{in: "0", err: `"0": not a port`},
		{in: "65536", err: `"65536": not a port`},
		{in: "http", err: `"http": not a port`},
	} {
		p, err := ParsePorts(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParsePorts(%q) = %v, want error with %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || p.String() != tc.want {
			t.Errorf("ParsePorts(%q) = %q, %v; want %q", tc.in, p, err, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		edit func(*Config)
		err  string
	}{
		{func(c *Config) { c.OutboundPort = 0 }, "outbound port"},
		{func(c *Config) { c.InboundPort = 0 }, "inbound port"},
		{func(c *Config) { c.InboundPort = c.OutboundPort }, "must differ"},
		{func(c *Config) { c.ProxyUIDs, c.ProxyGIDs = nil, nil }, "a loop"},
		{func(c *Config) { c.ExcludeInterfaces = []string{"eth0 -j ACCEPT"} }, `interface "eth0 -j ACCEPT"`},
		{func(c *Config) { c.ExcludeInterfaces = []string{"averyveryverylongname"} }, "not a network interface name"},
	} {
		c := Default()
		tc.edit(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("Validate = %v, want error with %q", err, tc.err)
		}
	}
}

func TestDeleteJumps(t *testing.T) {
	save := `# Generated by iptables-save
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [3:180]
:WEFT_INBOUND - [0:0]
:WEFT_OTHER - [0:0]
:WEFT_OUTPUT - [0:0]
-A PREROUTING -p tcp -j WEFT_INBOUND
-A PREROUTING -p tcp -j WEFT_OTHER
-A OUTPUT -j WEFT_OUTPUT
-A OUTPUT -d 10.0.0.0/8 -j RETURN
-A WEFT_INBOUND -p tcp -j WEFT_IN_REDIRECT
COMMIT
`
	got := strings.Join(deleteJumps(save), "|")
	if want := "-D PREROUTING -p tcp -j WEFT_INBOUND|-D OUTPUT -j WEFT_OUTPUT"; got != want {
		t.Errorf("deleteJumps = %q, want %q", got, want)
	}
	if got := strings.Join(weftChains(save), ","); got != "WEFT_INBOUND,WEFT_OUTPUT" {
		t.Errorf("weftChains = %q", got)
	}
}
