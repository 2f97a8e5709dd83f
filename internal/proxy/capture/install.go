package capture

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
)

// Backend names which iptables implementation programs the rules.
type Backend string

// The backends. Auto uses the system's iptables commands, whichever
// implementation `iptables -V` reports.
const (
	BackendAuto   Backend = "auto"
	BackendNFT    Backend = "nft"
	BackendLegacy Backend = "legacy"
)

// ParseBackend checks a --iptables-backend value.
func ParseBackend(s string) (Backend, error) {
	switch b := Backend(s); b {
	case BackendAuto, BackendNFT, BackendLegacy:
		return b, nil
	}
	return "", fmt.Errorf("%q: want auto, nft or legacy", s)
}

// Runner makes the command that runs an iptables binary. Tests use it to
// run the commands inside a network namespace (ip netns exec).
type Runner func(ctx context.Context, name string, args ...string) *exec.Cmd

// Installer applies and removes the rules in the network namespace its
// commands run in. Its methods run the iptables commands and block until
// they finish (or ctx ends); an Installer is configured once and used from
// one goroutine at a time (capture is one short-lived init step).
type Installer struct {
	// Backend picks the iptables implementation; "" means auto.
	Backend Backend
	// Run makes the commands; nil runs them directly (exec.CommandContext).
	Run Runner
	// IPv6 reports whether the network namespace has IPv6; nil checks
	// /proc/net/if_inet6 (absent when the kernel has no IPv6).
	IPv6 func() bool
	// Log receives what is done; nil discards it.
	Log *slog.Logger
}

// binaries returns the save and restore commands of a family for backend b.
func binaries(b Backend, f Family) (save, restore string) {
	base := "iptables"
	if f == IPv6 {
		base = "ip6tables"
	}
	switch b {
	case BackendNFT, BackendLegacy:
		return base + "-" + string(b) + "-save", base + "-" + string(b) + "-restore"
	}
	return base + "-save", base + "-restore"
}

func (in *Installer) log() *slog.Logger {
	if in.Log != nil {
		return in.Log
	}
	return slog.New(slog.DiscardHandler)
}

func (in *Installer) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if in.Run != nil {
		return in.Run(ctx, name, args...)
	}
	return exec.CommandContext(ctx, name, args...)
}

// run runs name with stdin and returns its stdout; the error carries
// stderr.
func (in *Installer) run(ctx context.Context, stdin string, name string, args ...string) (string, error) {
	cmd := in.command(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			return "", fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
		}
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return stdout.String(), nil
}

// Detect returns the implementation the auto backend uses, from
// `iptables -V` ("iptables v1.8.9 (nf_tables)" is nft, anything else
// legacy), as Istio detects it.
func (in *Installer) Detect(ctx context.Context) (Backend, error) {
	if in.Backend != "" && in.Backend != BackendAuto {
		return in.Backend, nil
	}
	out, err := in.run(ctx, "", "iptables", "-V")
	if err != nil {
		return "", fmt.Errorf("detect iptables backend: %w", err)
	}
	if strings.Contains(out, "nf_tables") {
		return BackendNFT, nil
	}
	return BackendLegacy, nil
}

// families returns the families to program: IPv4 always, IPv6 when the
// namespace has it.
func (in *Installer) families() []Family {
	has := in.IPv6
	if has == nil {
		has = func() bool {
			_, err := os.Stat("/proc/net/if_inet6")
			return err == nil
		}
	}
	if has() {
		return []Family{IPv4, IPv6}
	}
	in.log().Info("IPv6 not available in this network namespace: only IPv4 rules")
	return []Family{IPv4}
}

// Install applies c: for each family one atomic iptables-restore
// --noflush call that (re)creates Weft's chains with c's rules and
// replaces any jumps to them left by an earlier run, so installing twice
// gives the same rules. Nothing else in the tables changes. With IPv6 it
// first adds ::6/128 to lo (InboundPassthroughIPv6), which the proxy
// binds to reach the application; Clean leaves that address.
func (in *Installer) Install(ctx context.Context, c Config) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	backend, err := in.Detect(ctx)
	if err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	for _, f := range in.families() {
		if f == IPv6 {
			// The inbound passthrough source must exist before capture
			// starts sending inbound IPv6 connections to the proxy.
			if err := in.addLoopbackAddress(ctx); err != nil {
				return fmt.Errorf("capture: %s: %w", f, err)
			}
		}
		save, restore := binaries(in.Backend, f)
		current, err := in.run(ctx, "", save, "-t", "nat")
		if err != nil {
			return fmt.Errorf("capture: %s: read the nat table: %w", f, err)
		}
		// Drop the earlier run's jumps in the same transaction, so there
		// is no moment without capture and no duplicate jump after it.
		del := deleteJumps(current)
		add := rules(c, f)
		payload := "*nat\n" + join(prologue()) + join(del) + join(add) + "COMMIT\n"
		if _, err := in.run(ctx, payload, restore, restoreArgs(backend)...); err != nil {
			return fmt.Errorf("capture: %s: install rules (%s backend): %w", f, backend, err)
		}
		in.log().Info("capture rules installed", "family", f.String(), "backend", string(backend), "rules", len(add), "replaced_jumps", len(del))
	}
	return nil
}

// Clean removes Weft's chains and the jumps to them, for each family, in
// one iptables-restore --noflush call each. It is a no-op when there is
// nothing of Weft's.
func (in *Installer) Clean(ctx context.Context) error {
	backend, err := in.Detect(ctx)
	if err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	for _, f := range in.families() {
		save, restore := binaries(in.Backend, f)
		current, err := in.run(ctx, "", save, "-t", "nat")
		if err != nil {
			return fmt.Errorf("capture: %s: read the nat table: %w", f, err)
		}
		lines := deleteJumps(current)
		chains := weftChains(current)
		// Flush every chain before deleting any: they jump to each other.
		for _, ch := range chains {
			lines = append(lines, "-F "+ch)
		}
		for _, ch := range chains {
			lines = append(lines, "-X "+ch)
		}
		if len(lines) == 0 {
			in.log().Info("no capture rules to remove", "family", f.String())
			continue
		}
		if _, err := in.run(ctx, "*nat\n"+join(lines)+"COMMIT\n", restore, restoreArgs(backend)...); err != nil {
			return fmt.Errorf("capture: %s: remove rules: %w", f, err)
		}
		in.log().Info("capture rules removed", "family", f.String(), "chains", len(chains))
	}
	return nil
}

// restoreArgs are iptables-restore's arguments: --noflush, and for the
// legacy backend, which takes the xtables lock, a bounded wait for it (as
// Istio: another agent in the namespace may hold it for a moment).
func restoreArgs(b Backend) []string {
	if b == BackendLegacy {
		return []string{"--noflush", "--wait=30"}
	}
	return []string{"--noflush"}
}

// deleteJumps returns "-D" lines for every rule of the built-in chains of
// an iptables-save listing that jumps to one of Weft's chains.
func deleteJumps(save string) []string {
	var out []string
	for line := range strings.Lines(save) {
		line = strings.TrimSpace(line)
		rest, ok := strings.CutPrefix(line, "-A ")
		if !ok {
			continue
		}
		chain, _, _ := strings.Cut(rest, " ")
		if isWeft(chain) {
			continue
		}
		if target := jumpTarget(rest); isWeft(target) {
			out = append(out, "-D "+rest)
		}
	}
	return out
}

// weftChains returns the chains of an iptables-save listing that are
// Weft's.
func weftChains(save string) []string {
	var out []string
	for line := range strings.Lines(save) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), ":"); ok {
			name, _, _ := strings.Cut(rest, " ")
			if isWeft(name) {
				out = append(out, name)
			}
		}
	}
	return out
}

func jumpTarget(spec string) string {
	f := strings.Fields(spec)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "-j" || f[i] == "-g" || f[i] == "--jump" || f[i] == "--goto" {
			return f[i+1]
		}
	}
	return ""
}

// isWeft reports whether chain is one of Weft's (only these exact names:
// a user's chain that merely starts with WEFT_ is left alone).
func isWeft(chain string) bool { return slices.Contains(Chains, chain) }

func join(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\n") + "\n"
}
