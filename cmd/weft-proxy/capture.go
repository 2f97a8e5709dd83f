package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"weft.dev/weft/internal/logflag"
	"weft.dev/weft/internal/proxy/capture"
)

// captureFlags holds the raw command line of weft-proxy capture. The
// names, meanings and defaults are istio-iptables'.
type captureFlags struct {
	outboundPort, inboundPort        uint16
	proxyUID, proxyGID               string
	includeOutbound, excludeOutbound string
	includeInbound, excludeInbound   string
	excludeOutboundPorts             string
	includeOutboundPorts             string
	excludeInterfaces                string
	backend, logLevel                string
	dryRun, clean                    bool
}

func (f *captureFlags) register(fs *pflag.FlagSet) {
	fs.SortFlags = false
	fs.Uint16Var(&f.outboundPort, "outbound-port", capture.DefaultOutboundPort, "`port` outbound TCP connections are redirected to (the proxy's outbound capture listener)")
	fs.Uint16Var(&f.inboundPort, "inbound-port", capture.DefaultInboundPort, "`port` inbound TCP connections are redirected to (the proxy's inbound capture listener)")
	fs.StringVar(&f.proxyUID, "proxy-uid", strconv.Itoa(capture.DefaultProxyUID), "the proxy's user `ids` (comma list): their connections are never captured")
	fs.StringVar(&f.proxyGID, "proxy-gid", strconv.Itoa(capture.DefaultProxyGID), "the proxy's group `ids` (comma list): their connections are never captured")
	fs.StringVar(&f.includeOutbound, "include-outbound-ip-ranges", "*", "destination `CIDRs` (comma list) whose outbound connections are captured; \"*\" for all, \"\" for none")
	fs.StringVar(&f.excludeOutbound, "exclude-outbound-ip-ranges", "", "destination `CIDRs` (comma list) never captured")
	fs.StringVar(&f.includeInbound, "include-inbound-ports", "*", "local `ports` (comma list) whose inbound connections are captured; \"*\" for all, \"\" for none")
	fs.StringVar(&f.excludeInbound, "exclude-inbound-ports", "", "local `ports` (comma list) not captured inbound when --include-inbound-ports is \"*\"; the proxy's own ports (15000,15001,15006,15020,15021,15090) always are")
	fs.StringVar(&f.excludeOutboundPorts, "exclude-outbound-ports", "", "destination `ports` (comma list) never captured outbound")
	fs.StringVar(&f.includeOutboundPorts, "include-outbound-ports", "", "destination `ports` (comma list) captured outbound whatever the destination address (unless excluded)")
	fs.StringVar(&f.excludeInterfaces, "exclude-interfaces", "", "network `interfaces` (comma list) whose traffic is never captured")
	fs.StringVar(&f.backend, "iptables-backend", string(capture.BackendAuto), "`auto` (what iptables -V reports), nft (iptables-nft) or legacy (iptables-legacy)")
	fs.BoolVar(&f.dryRun, "dry-run", false, "print the iptables-restore input for IPv4 and IPv6 instead of applying it")
	fs.BoolVar(&f.clean, "clean", false, "remove Weft's chains and the jumps to them instead of installing")
	fs.StringVar(&f.logLevel, logflag.Name, logflag.Default, logflag.Usage)
}

// config checks the flags; every error names the flag and the value.
func (f *captureFlags) config() (capture.Config, error) {
	c := capture.Config{OutboundPort: f.outboundPort, InboundPort: f.inboundPort}
	var err error
	if c.ProxyUIDs, err = parseIDs(f.proxyUID); err != nil {
		return c, fmt.Errorf("--proxy-uid %q: %w", f.proxyUID, err)
	}
	if c.ProxyGIDs, err = parseIDs(f.proxyGID); err != nil {
		return c, fmt.Errorf("--proxy-gid %q: %w", f.proxyGID, err)
	}
	if c.IncludeOutbound, err = capture.ParseRanges(f.includeOutbound); err != nil {
		return c, fmt.Errorf("--include-outbound-ip-ranges: %w", err)
	}
	ex, err := capture.ParseRanges(f.excludeOutbound)
	if err != nil {
		return c, fmt.Errorf("--exclude-outbound-ip-ranges: %w", err)
	}
	if ex.All {
		return c, fmt.Errorf("--exclude-outbound-ip-ranges \"*\": not allowed; use --include-outbound-ip-ranges '' to capture nothing")
	}
	c.ExcludeOutbound = ex.Prefixes
	if c.IncludeInbound, err = capture.ParsePorts(f.includeInbound); err != nil {
		return c, fmt.Errorf("--include-inbound-ports: %w", err)
	}
	for _, p := range []struct {
		name, value string
		dst         *[]uint16
	}{
		{"--exclude-inbound-ports", f.excludeInbound, &c.ExcludeInbound},
		{"--exclude-outbound-ports", f.excludeOutboundPorts, &c.ExcludeOutboundPorts},
		{"--include-outbound-ports", f.includeOutboundPorts, &c.IncludeOutboundPorts},
	} {
		ports, err := capture.ParsePorts(p.value)
		if err != nil {
			return c, fmt.Errorf("%s: %w", p.name, err)
		}
		if ports.All {
			return c, fmt.Errorf("%s \"*\": not allowed; list ports", p.name)
		}
		*p.dst = ports.Ports
	}
	for name := range strings.SplitSeq(f.excludeInterfaces, ",") {
		if name = strings.TrimSpace(name); name != "" {
			c.ExcludeInterfaces = append(c.ExcludeInterfaces, name)
		}
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("capture flags: %w", err)
	}
	return c, nil
}

// parseIDs parses a comma list of user or group ids ("" is none).
func parseIDs(s string) ([]uint32, error) {
	var ids []uint32
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		n, err := strconv.ParseUint(part, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%q is not a numeric id", part)
		}
		ids = append(ids, uint32(n))
	}
	return ids, nil
}

// newCaptureCmd builds `weft-proxy capture`: the pod's init step that
// installs the transparent-capture rules. Logs go to stderr; --dry-run
// prints to the command's stdout.
func newCaptureCmd(stderr io.Writer) *cobra.Command {
	var f captureFlags
	cmd := &cobra.Command{
		Use:   "capture [flags]",
		Short: "Install the iptables rules that send the pod's TCP traffic through weft-proxy",
		Long: `capture installs, in the current network namespace, the iptables nat rules
that make the pod's traffic go through its weft-proxy without the application
knowing: outbound TCP connections are redirected to --outbound-port, inbound
ones to --inbound-port, and the proxy's own connections (--proxy-uid,
--proxy-gid) are left alone. It runs once, as root (CAP_NET_ADMIN), in the
pod's init container. The flags have istio-iptables' names, meanings and
defaults. Rules go in Weft's own chains (WEFT_INBOUND, WEFT_IN_REDIRECT,
WEFT_OUTPUT, WEFT_REDIRECT), one atomic iptables-restore --noflush per
address family; running it again replaces them, --clean removes them.
IPv6 rules are installed when the namespace has IPv6.`,
		Example: `  weft-proxy capture --dry-run
  weft-proxy capture --exclude-outbound-ip-ranges 169.254.169.254/32 --exclude-inbound-ports 22
  weft-proxy capture --clean`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("capture: unexpected arguments %q: it takes flags only", args)}
			}
			return nil
		},
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logflag.Logger(stderr, f.logLevel)
			if err != nil {
				return usageError{err}
			}
			backend, err := capture.ParseBackend(f.backend)
			if err != nil {
				return usageError{fmt.Errorf("--iptables-backend: %w", err)}
			}
			in := &capture.Installer{Backend: backend, Log: log}
			if f.clean {
				return in.Clean(cmd.Context())
			}
			c, err := f.config()
			if err != nil {
				return usageError{err}
			}
			if f.dryRun {
				out := cmd.OutOrStdout()
				for _, fam := range []capture.Family{capture.IPv4, capture.IPv6} {
					fmt.Fprintf(out, "# %s (iptables-restore --noflush)\n%s", fam, capture.Ruleset(c, fam))
				}
				return nil
			}
			return in.Install(cmd.Context(), c)
		},
	}
	f.register(cmd.Flags())
	return cmd
}
