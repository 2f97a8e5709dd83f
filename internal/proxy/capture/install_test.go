package capture

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/internal/testenv"
)

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// normalize drops iptables-save's comments and zeroes its counters.
func normalize(save string) string {
	var b strings.Builder
	for line := range strings.Lines(save) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		b.WriteString(counters.ReplaceAllString(line, "[0:0]"))
	}
	return b.String()
}

// needIptables skips (or fails, when tools are required) unless the
// backend's commands exist.
func needIptables(t *testing.T, b Backend) {
	t.Helper()
	for _, f := range []Family{IPv4, IPv6} {
		save, restore := binaries(b, f)
		for _, name := range []string{save, restore} {
			if _, err := exec.LookPath(name); err != nil {
				if testenv.Required() {
					t.Fatalf("%s not found (apt-get install iptables)", name)
				}
				t.Skipf("%s not found (apt-get install iptables)", name)
			}
		}
	}
}

// hostHasNoWeftChains fails t if the host's own nat tables (outside every
// test namespace) hold a Weft chain.
func hostHasNoWeftChains(t *testing.T, ctx context.Context) {
	t.Helper()
	for _, b := range []Backend{BackendNFT, BackendLegacy} {
		for _, f := range []Family{IPv4, IPv6} {
			if b == BackendLegacy && !hostHasLegacyNat(f) {
				continue // reading it would create it: nothing of ours there
			}
			save, _ := binaries(b, f)
			out, err := exec.CommandContext(ctx, save, "-t", "nat").Output()
			if err != nil {
				continue // that backend or family is not usable on the host: nothing of ours there either
			}
			if strings.Contains(string(out), "WEFT_") {
				t.Errorf("the host's %s %s nat table holds Weft chains:\n%s", b, f, out)
			}
		}
	}
}

// hostHasLegacyNat reports whether the host's legacy (x_tables) nat table
// of family f exists. iptables-legacy-save -t nat would create it.
func hostHasLegacyNat(f Family) bool {
	names := "/proc/net/ip_tables_names"
	if f == IPv6 {
		names = "/proc/net/ip6_tables_names"
	}
	b, err := os.ReadFile(names)
	return err == nil && slices.Contains(strings.Fields(string(b)), "nat")
}

// TestCaptureRules installs the default rules in a network namespace the
// test creates, with each backend, and checks them with iptables-save
// against golden listings; installing again changes nothing; Clean removes
// them (and is a no-op the second time); the host's tables are untouched.
func TestCaptureRules(t *testing.T) {
	testenv.Privileged(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	network := testenv.NewNetwork(t)
	for _, b := range []Backend{BackendNFT, BackendLegacy} {
		t.Run(string(b), func(t *testing.T) {
			needIptables(t, b)
			ns := network.Netns(t, "cap"+string(b[0]))
			in := &Installer{Backend: b, Run: ns.Command}
			families := in.families()
			list := func(f Family) string {
				t.Helper()
				save, _ := binaries(b, f)
				out, err := in.run(ctx, "", save, "-t", "nat")
				if err != nil {
					t.Fatal(err)
				}
				return normalize(out)
			}
			if err := in.Install(ctx, Default()); err != nil {
				t.Fatal(err)
			}
			first := map[Family]string{}
			for _, f := range families {
				first[f] = list(f)
				golden(t, "save-"+string(b)+"-"+strings.ToLower(f.String())+".golden", first[f])
			}
			hostHasNoWeftChains(t, ctx)

			// Again, with other settings, then the defaults: the rules are
			// replaced, not added to.
			other := Default()
			other.ExcludeOutboundPorts = []uint16{3306}
			if err := in.Install(ctx, other); err != nil {
				t.Fatal(err)
			}
			if got := list(IPv4); !strings.Contains(got, "--dport 3306 -j RETURN") {
				t.Errorf("reinstall with --exclude-outbound-ports 3306 not applied:\n%s", got)
			}
			if err := in.Install(ctx, Default()); err != nil {
				t.Fatal(err)
			}
			for _, f := range families {
				if got := list(f); got != first[f] {
					t.Errorf("%s: installing again changed the rules:\n--- now\n%s\n--- first\n%s", f, got, first[f])
				}
			}

			for range 2 { // Clean is idempotent
				if err := in.Clean(ctx); err != nil {
					t.Fatal(err)
				}
				for _, f := range families {
					if got := list(f); strings.Contains(got, "WEFT_") {
						t.Errorf("%s: Clean left Weft's rules:\n%s", f, got)
					}
				}
			}
			hostHasNoWeftChains(t, ctx)
		})
	}
}

// TestInstallKeepsOthersRules checks that Install and Clean leave rules
// that are not Weft's alone.
func TestInstallKeepsOthersRules(t *testing.T) {
	testenv.Privileged(t)
	needIptables(t, BackendAuto)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := testenv.NewNetwork(t).Netns(t, "keep")
	in := &Installer{Run: ns.Command, IPv6: func() bool { return false }}
	if _, err := in.run(ctx, "", "iptables", "-t", "nat", "-A", "OUTPUT", "-d", "10.9.9.9/32", "-j", "RETURN"); err != nil {
		t.Fatal(err)
	}
	if err := in.Install(ctx, Default()); err != nil {
		t.Fatal(err)
	}
	if err := in.Clean(ctx); err != nil {
		t.Fatal(err)
	}
	out, err := in.run(ctx, "", "iptables-save", "-t", "nat")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "-A OUTPUT -d 10.9.9.9/32 -j RETURN") || strings.Contains(out, "WEFT_") {
		t.Errorf("after Install and Clean:\n%s", out)
	}
}

// TestInstallAddsIPv6PassthroughAddress: with IPv6, Install puts ::6/128
// on the namespace's lo (the proxy's inbound passthrough source), through
// the Runner when there is one and by netlink without; twice is no error;
// the host's lo is untouched.
func TestInstallAddsIPv6PassthroughAddress(t *testing.T) {
	testenv.Privileged(t)
	needIptables(t, BackendAuto)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	network := testenv.NewNetwork(t)
	network.RequireIPv6(t)
	hasPassthrough := func(ns *testenv.Netns) bool {
		t.Helper()
		out, err := ns.Command(ctx, "ip", "-6", "-o", "addr", "show", "dev", "lo").CombinedOutput()
		if err != nil {
			t.Fatalf("ip addr in %s: %v: %s", ns.Name, err, out)
		}
		return strings.Contains(string(out), " ::6/128 ")
	}
	hostLo, _ := exec.Command("ip", "-6", "-o", "addr", "show", "dev", "lo").Output()

	// Through the Runner, as the tests install rules.
	ns := network.Netns(t, "lo6")
	in := &Installer{Run: ns.Command, IPv6: func() bool { return true }}
	for range 2 {
		if err := in.Install(ctx, Default()); err != nil {
			t.Fatal(err)
		}
		if !hasPassthrough(ns) {
			t.Fatalf("no ::6/128 on lo in %s after Install", ns.Name)
		}
	}
	// By netlink, as `weft-proxy capture` does in the pod's namespace.
	ns2 := network.Netns(t, "nl6")
	for range 2 {
		if err := ns2.Do(func() error { return replaceAddr("lo", InboundPassthroughIPv6) }); err != nil {
			t.Fatal(err)
		}
	}
	if !hasPassthrough(ns2) {
		t.Fatalf("no ::6/128 on lo in %s after replaceAddr", ns2.Name)
	}
	if err := ns2.Do(func() error { return replaceAddr("no-such-if0", InboundPassthroughIPv6) }); err == nil {
		t.Error("replaceAddr on a missing interface: no error")
	}
	// A lo with IPv6 switched off is left alone, without an error.
	ns3 := network.Netns(t, "off6")
	if err := ns3.Do(func() error { return os.WriteFile("/proc/sys/net/ipv6/conf/lo/disable_ipv6", []byte("1"), 0o644) }); err != nil {
		t.Fatalf("disable IPv6 on lo in %s: %v", ns3.Name, err)
	}
	if err := ns3.Do(func() error { return (&Installer{}).addLoopbackAddress(ctx) }); err != nil {
		t.Errorf("lo with IPv6 disabled: %v", err)
	}
	if hasPassthrough(ns3) {
		t.Errorf("::6/128 added to a lo with IPv6 disabled")
	}
	if now, _ := exec.Command("ip", "-6", "-o", "addr", "show", "dev", "lo").Output(); string(now) != string(hostLo) {
		t.Errorf("the host's lo changed:\n%s\nwas:\n%s", now, hostLo)
	}
}
