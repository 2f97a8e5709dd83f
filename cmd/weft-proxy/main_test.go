package main

import (
	"bytes"
	"context"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/goleak"

	"weft.dev/weft/internal/ca"
	"weft.dev/weft/internal/proxy"
	"weft.dev/weft/internal/proxy/overload"
	"weft.dev/weft/internal/xds/contract"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// parse runs the command line as run does, but hands the checked options
// back instead of starting a proxy.
func parse(t *testing.T, args ...string) (proxy.Options, string) {
	t.Helper()
	var got *proxy.Options
	var stderr bytes.Buffer
	cmd := newRootCmd(&stderr, func(_ context.Context, o proxy.Options) error { got = &o; return nil })
	cmd.InitDefaultHelpFlag()
	cmd.SetArgs(longFlagsCompat(args, cmd.Flags(), &stderr))
	cmd.SetOut(&stderr)
	cmd.SetErr(&stderr)
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("%q: %v", args, err)
	}
	if got == nil {
		t.Fatalf("%q: the proxy was not started", args)
	}
	return *got, stderr.String()
}

// rootCert writes a trust root to a file and returns its path.
func rootCert(t *testing.T) (string, []byte) {
	t.Helper()
	c, err := ca.New(ca.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "root-cert.pem")
	if err := os.WriteFile(path, c.RootPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, c.RootPEM()
}

func TestParseFlagsDefaults(t *testing.T) {
	root, pem := rootCert(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("tok-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, _ := parse(t, "--workload", "reviews-v2", "--root-cert", root, "--token-file", tokenFile)
	id := o.Identity
	if o.XDSAddress != "127.0.0.1:15012" || o.AdminAddress != "127.0.0.1:15000" || o.DrainTimeout != proxy.DefaultDrainTimeout {
		t.Errorf("addresses %q %q drain %v", o.XDSAddress, o.AdminAddress, o.DrainTimeout)
	}
	if o.Plaintext || !bytes.Equal(o.RootCertPEM, pem) || o.TrustDomain != "cluster.local" || o.CertDir != "" || o.Token == nil {
		t.Errorf("security options: plaintext %v, root %d bytes, trust domain %q, cert dir %q", o.Plaintext, len(o.RootCertPEM), o.TrustDomain, o.CertDir)
	}
	if tok, err := o.Token(); tok != "tok-123" || err != nil {
		t.Errorf("token from --token-file: %q %v", tok, err)
	}
	// The file is read again at each attempt: an operator may fix it.
	_ = os.WriteFile(tokenFile, []byte("tok-456"), 0o600)
	if tok, _ := o.Token(); tok != "tok-456" {
		t.Errorf("token after the file changed: %q", tok)
	}
	_ = os.WriteFile(tokenFile, []byte(" \n"), 0o600)
	if _, err := o.Token(); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("empty token file: %v", err)
	}
	if !o.Logger.Enabled(context.Background(), slog.LevelInfo) || o.Logger.Enabled(context.Background(), slog.LevelDebug) {
		t.Errorf("default log level is not info")
	}
	if o.ListenerDrain != 5*time.Second {
		t.Errorf("listener drain %v, want 5s", o.ListenerDrain)
	}
	if !o.PageOutStartup {
		t.Errorf("start-up pages are not paged out by default")
	}
	if o, _ := parse(t, "--workload", "w", "--xds-plaintext", "--keep-startup-pages"); o.PageOutStartup {
		t.Errorf("--keep-startup-pages: start-up pages still paged out")
	}
	if id.ID != contract.DefaultNodeID("127.0.0.1", "reviews-v2", "default") || id.Namespace != "default" ||
		!slices.Equal(id.IPs, []string{"127.0.0.1"}) || id.OutboundAddress != contract.DefaultOutboundAddress ||
		id.ServiceAccount != "default" || len(id.Labels) != 0 || len(id.AppPorts) != 0 {
		t.Errorf("identity %+v", id)
	}
}

func TestParseFlags(t *testing.T) {
	o, _ := parse(t,
		"--xds-address", "cp:15010", "--xds-plaintext", "--admin-address", ":0", "--namespace", "shop", "--workload", "reviews-v2",
		"--labels", "app=reviews,version=v2", "--ip", "127.0.0.2,10.0.0.1", "--ip", "::1",
		"--service-account", "reviews", "--outbound", "", "--app-port", "9080=127.0.0.1:18080",
		"--app-port=9090=127.0.0.1:19090", "--log-level", "debug", "--locality", "eu/a/1", "--drain-timeout", "250ms", "--listener-drain-time", "30s",
	)
	id := o.Identity
	if id.ID != "sidecar~127.0.0.2~reviews-v2.shop~shop.svc.cluster.local" {
		t.Errorf("id = %q", id.ID)
	}
	if !slices.Equal(id.IPs, []string{"127.0.0.2", "10.0.0.1", "::1"}) || id.OutboundAddress != "" || id.ServiceAccount != "reviews" || id.Locality != "eu/a/1" {
		t.Errorf("identity %+v", id)
	}
	if !maps.Equal(id.Labels, map[string]string{"app": "reviews", "version": "v2"}) {
		t.Errorf("labels %v", id.Labels)
	}
	if !maps.Equal(id.AppPorts, map[uint32]string{9080: "127.0.0.1:18080", 9090: "127.0.0.1:19090"}) {
		t.Errorf("app ports %v", id.AppPorts)
	}
	if !o.Logger.Enabled(context.Background(), slog.LevelDebug) || o.XDSAddress != "cp:15010" || o.AdminAddress != ":0" || o.DrainTimeout != 250*time.Millisecond || o.ListenerDrain != 30*time.Second {
		t.Errorf("options %+v", o)
	}
	if !o.Plaintext || o.RootCertPEM != nil || o.Token != nil {
		t.Errorf("--xds-plaintext: plaintext %v, root %d bytes", o.Plaintext, len(o.RootCertPEM))
	}
	// Control plane replicas: repeated and comma lists, the default replaced.
	if o, _ := parse(t, "--workload", "w", "--xds-plaintext", "--xds-address", "cp-0:15010,cp-1:15010", "--xds-address", "[fd00::2]:15010"); o.XDSAddress != "cp-0:15010,cp-1:15010,[fd00::2]:15010" {
		t.Errorf("several --xds-address: %q", o.XDSAddress)
	}
	if o, _ := parse(t, "--workload", "w", "--xds-plaintext", "--id", "custom", "--log-level", "WARN"); o.Identity.ID != "custom" || o.Logger.Enabled(context.Background(), slog.LevelInfo) {
		t.Errorf("--id custom --log-level WARN: id %q", o.Identity.ID)
	}
}

// The global connection limit and the overload guard: numbers and sizes
// as given, auto derived from the open-file limit and the cgroup.
func TestOverloadFlags(t *testing.T) {
	o, _ := parse(t, "--workload", "w", "--xds-plaintext", "--max-connections", "5000", "--overload-memory-limit", "256Mi")
	if o.MaxConnections != 5000 || o.OverloadMemoryLimit != 256<<20 {
		t.Errorf("max connections %d, memory limit %d", o.MaxConnections, o.OverloadMemoryLimit)
	}
	if o, _ := parse(t, "--workload", "w", "--xds-plaintext", "--max-connections", "0", "--overload-memory-limit", "0"); o.MaxConnections != 0 || o.OverloadMemoryLimit != 0 {
		t.Errorf("0, 0: max connections %d, memory limit %d", o.MaxConnections, o.OverloadMemoryLimit)
	}
	o, _ = parse(t, "--workload", "w", "--xds-plaintext")
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if want := int(rl.Cur / 2); o.MaxConnections != want {
		t.Errorf("auto max connections %d, want half of RLIMIT_NOFILE %d", o.MaxConnections, want)
	}
	want, err := overload.CgroupMemoryLimit()
	if err != nil {
		want = 0
	}
	if o.OverloadMemoryLimit != want {
		t.Errorf("auto memory limit %d, want the cgroup's %d", o.OverloadMemoryLimit, want)
	}
}

// --gc-headroom: 8 MiB unless given (off for a gateway), 0 for off;
// --gc-headroom-min: 3/8 of it unless given; a large configuration is
// taken in on a quarter of it, or on half of a --gc-headroom-min given.
func TestGCHeadroomFlag(t *testing.T) {
	for _, tc := range []struct {
		args              []string
		want, min, intake uint64
	}{
		{nil, 8 << 20, 3 << 20, 2 << 20},
		{[]string{"--gc-headroom", "32Mi"}, 32 << 20, 12 << 20, 8 << 20},
		{[]string{"--gc-headroom", "0"}, 0, 0, 0},
		{[]string{"--gateway"}, 0, 0, 0},
		{[]string{"--gateway", "--gc-headroom", "16Mi"}, 16 << 20, 6 << 20, 4 << 20},
		{[]string{"--gc-headroom-min", "8Mi"}, 8 << 20, 8 << 20, 4 << 20}, // a fixed bound
		{[]string{"--gc-headroom-min", "2Mi"}, 8 << 20, 2 << 20, 1 << 20},
	} {
		o, _ := parse(t, append([]string{"--workload", "w", "--xds-plaintext"}, tc.args...)...)
		if o.GCHeadroom != tc.want || o.GCHeadroomMin != tc.min || o.GCHeadroomIntake != tc.intake {
			t.Errorf("%q: GC headroom %d, min %d, intake %d, want %d, %d, %d", tc.args, o.GCHeadroom, o.GCHeadroomMin, o.GCHeadroomIntake, tc.want, tc.min, tc.intake)
		}
	}
}

// --labels may be repeated like --ip and --app-port; given twice for one
// key, the later value wins, as it did when the last --labels won.
func TestLabelsRepeatable(t *testing.T) {
	o, _ := parse(t, "--workload", "w", "--xds-plaintext", "--labels", "app=a,version=v1", "--labels", "app=b", "--labels", "stage=canary")
	if want := map[string]string{"app": "b", "version": "v1", "stage": "canary"}; !maps.Equal(o.Identity.Labels, want) {
		t.Errorf("labels %v, want %v", o.Identity.Labels, want)
	}
}

// Command lines written for Go's flag package (one dash before a long
// flag) keep working, with a warning.
func TestSingleDashLongFlags(t *testing.T) {
	o, stderr := parse(t, "-xds-plaintext", "-workload", "w", "-ip=127.0.0.2", "-outbound", "", "-id", "-not-a-flag", "-labels", "app=x")
	if o.Identity.WorkloadName != "w" || !slices.Equal(o.Identity.IPs, []string{"127.0.0.2"}) || o.Identity.OutboundAddress != "" ||
		o.Identity.ID != "-not-a-flag" || o.Identity.Labels["app"] != "x" {
		t.Errorf("identity %+v", o.Identity)
	}
	if !strings.Contains(stderr, "single-dash long flags are deprecated; use --xds-plaintext, --workload, --ip, --outbound, --id, --labels") {
		t.Errorf("stderr %q lacks the deprecation warning", stderr)
	}
	if _, stderr := parse(t, "--workload", "w", "--xds-plaintext"); stderr != "" {
		t.Errorf("double-dash flags: stderr %q", stderr)
	}
}

func TestLongFlagsCompat(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.String("id", "", "")
	fs.Bool("verbose", false, "")
	for _, tc := range []struct{ in, want []string }{
		{[]string{"-id", "-id"}, []string{"--id", "-id"}}, // a value is never rewritten
		{[]string{"--id", "-id", "-id=x"}, []string{"--id", "-id", "--id=x"}},
		{[]string{"-verbose", "-id", "x"}, []string{"--verbose", "--id", "x"}}, // a bool takes no value
		{[]string{"-h", "-zz", "--", "-id"}, []string{"-h", "-zz", "--", "-id"}},
	} {
		if got := longFlagsCompat(tc.in, fs, &bytes.Buffer{}); !slices.Equal(got, tc.want) {
			t.Errorf("%q -> %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestBadFlagsExit2(t *testing.T) {
	root, _ := rootCert(t)
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	_ = os.WriteFile(notPEM, []byte("hello"), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--ip", "not-an-ip"}, `--ip "not-an-ip": not an IP address`},
		{[]string{"--labels", "app"}, `--labels "app": "app" is not key=value`},
		{[]string{"--labels", "=x"}, `--labels "=x"`},
		{[]string{"--app-port", "x=1.2.3.4:5"}, `--app-port: WEFT_APP_PORTS: "x=1.2.3.4:5": bad port "x"`},
		{[]string{"--app-port", "9080"}, `--app-port: WEFT_APP_PORTS: "9080": want port=host:port`},
		{[]string{"--app-port", "9080=nohostport"}, "--app-port 9080=nohostport: want host:port"},
		{[]string{"--log-level", "loud"}, `--log-level "loud": want debug, info, warn or error`},
		{[]string{"--xds-address", "nope"}, `--xds-address "nope": want host:port`},
		{[]string{"--xds-address", "cp:1,nope"}, `--xds-address "nope": want host:port`},
		{[]string{"--xds-address", ","}, "--xds-address: no address given"},
		{[]string{"--admin-address", "127.0.0.1:"}, `--admin-address "127.0.0.1:": want host:port: missing port`},
		{[]string{"--outbound", "127.0.0.1"}, `--outbound "127.0.0.1"`},
		{[]string{"--namespace", ""}, "--namespace must not be empty"},
		{[]string{"--drain-timeout", "0s"}, "--drain-timeout 0s: must be positive"},
		{[]string{"--listener-drain-time", "0s"}, "--listener-drain-time 0s: must be positive"},
		{[]string{"--drain-timeout", "soon"}, `invalid argument "soon" for "--drain-timeout" flag`},
		{[]string{"--max-connections", "-1"}, `--max-connections "-1": want a number of connections (0: no limit) or auto`},
		{[]string{"--max-connections", "many"}, `--max-connections "many": want a number`},
		{[]string{"--overload-memory-limit", "lots"}, `--overload-memory-limit "lots": want a number of bytes, e.g. 268435456 or 256Mi`},
		{[]string{"--overload-memory-limit", "1Mi"}, `--overload-memory-limit "1Mi": at least 16Mi`},
		{[]string{"--gc-headroom", "some"}, `--gc-headroom "some": want a number of bytes, e.g. 268435456 or 256Mi`},
		{[]string{"--gc-headroom-min", "some"}, `--gc-headroom-min "some": want a number of bytes, e.g. 268435456 or 256Mi`},
		{[]string{"--gc-headroom-min", "16Mi"}, `--gc-headroom-min 16Mi is above --gc-headroom 8Mi`},
		{[]string{"--concurrency", "-1"}, "--concurrency -1: want the number of worker threads, or 0 for every CPU"},
		{[]string{"--concurrency", "two"}, `invalid argument "two" for "--concurrency" flag`},
		{[]string{"--concurrency-min", "-1"}, "--concurrency-min -1: want at least 1 worker thread, or 0 to keep --concurrency"},
		{[]string{"--concurrency", "2", "--concurrency-min", "3"}, "--concurrency-min 3 is above --concurrency 2"},
		{[]string{"--no-such-flag"}, "unknown flag: --no-such-flag"},
		{[]string{"--ip"}, "flag needs an argument: --ip"},
		{[]string{"extra"}, `unexpected arguments ["extra"]`},
		{nil, "--root-cert is required to verify the control plane on its secure port"},
		{[]string{"--root-cert", "/no/such/root.pem"}, "--root-cert: open /no/such/root.pem: no such file or directory"},
		{[]string{"--root-cert", notPEM}, "--root-cert " + notPEM + ": no PEM certificate in it"},
		{[]string{"--root-cert", root}, "--token-file (or --token) is required for the proxy's first certificate"},
		{[]string{"--root-cert", root, "--token", "a", "--token-file", "b"}, "--token and --token-file: give one"},
		{[]string{"--root-cert", root, "--token-file", "/no/such/token"}, "--token-file: stat /no/such/token: no such file or directory"},
		{[]string{"--root-cert", root, "--token", "a", "--trust-domain", ""}, "--trust-domain must not be empty"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), append([]string{"--workload", "w"}, tc.args...), &stdout, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2", tc.args, code)
		}
		if !strings.HasPrefix(stderr.String(), "weft-proxy: ") || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: stderr %q does not say %q", tc.args, stderr.String(), tc.want)
		}
		if strings.Count(stderr.String(), "\n") != 1 || stdout.Len() != 0 {
			t.Errorf("%v: want one line on stderr and nothing on stdout, got %q / %q", tc.args, stderr.String(), stdout.String())
		}
	}
}

func TestHelpExit0(t *testing.T) {
	for _, h := range []string{"--help", "-h", "-help"} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), []string{h}, &stdout, &stderr); code != 0 {
			t.Errorf("%s: exit %d, stderr %q", h, code, stderr.String())
		}
		for _, want := range []string{"Usage:", "weft-proxy [flags]", "--xds-address host:port", "--app-port port=host:port", "--log-level string", "--drain-timeout duration"} {
			if !strings.Contains(stdout.String(), want) {
				t.Errorf("%s: help lacks %q:\n%s", h, want, stdout.String())
			}
		}
	}
}

// TestFlagsDocumented keeps the flag table of docs/proxy.md equal to the
// flags the command defines.
func TestFlagsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/proxy.md")
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for _, m := range regexp.MustCompile("(?m)^\\| `--([a-z0-9-]+)").FindAllStringSubmatch(string(doc), -1) {
		documented = append(documented, m[1])
	}
	var defined []string
	newRootCmd(&bytes.Buffer{}, nil).Flags().VisitAll(func(f *pflag.Flag) { defined = append(defined, f.Name) })
	slices.Sort(documented)
	slices.Sort(defined)
	if !slices.Equal(documented, defined) {
		t.Errorf("docs/proxy.md documents %q, the command defines %q", documented, defined)
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // as if SIGTERM arrived at once: start, then shut down cleanly
	var stdout, stderr bytes.Buffer
	if code := run(ctx, []string{"--workload", "w", "--admin-address", "127.0.0.1:0", "--xds-plaintext", "--xds-address", "127.0.0.1:1"}, &stdout, &stderr); code != 0 {
		t.Errorf("exit %d, stderr:\n%s", code, stderr.String())
	}
}

// A proxy that cannot start (its admin address is taken) exits 1 and says why.
func TestStartFailureExit1(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"--workload", "w", "--xds-plaintext", "--admin-address", ln.Addr().String()}, &stdout, &stderr); code != 1 {
		t.Errorf("exit %d, want 1; stderr:\n%s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "weft-proxy: cannot start: proxy: admin listener on "+ln.Addr().String()) {
		t.Errorf("stderr %q", stderr.String())
	}
}

// TestHTTP10Flag: --http10 puts HTTP10 in the proxy's node identity;
// ISTIO_META_HTTP10 ("1" or "true", as Istio reads it) sets the flag's
// default, and the flag wins.
func TestHTTP10Flag(t *testing.T) {
	for _, tc := range []struct {
		env  string
		args []string
		want bool
	}{
		{"", nil, false},
		{"", []string{"--http10"}, true},
		{"1", nil, true},
		{"true", nil, true},
		{"0", nil, false},
		{"1", []string{"--http10=false"}, false},
	} {
		t.Setenv("ISTIO_META_HTTP10", tc.env)
		o, _ := parse(t, append([]string{"--workload", "w", "--xds-plaintext"}, tc.args...)...)
		if o.Identity.HTTP10 != tc.want {
			t.Errorf("ISTIO_META_HTTP10=%q %q: HTTP10 %v, want %v", tc.env, tc.args, o.Identity.HTTP10, tc.want)
		}
	}
}
