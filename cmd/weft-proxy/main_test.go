package main

import (
	"bytes"
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"weft.dev/weft/internal/xds/contract"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseFlagsDefaults(t *testing.T) {
	o, level, err := parseFlags([]string{"--workload", "reviews-v2"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	id := o.Identity
	if o.XDSAddress != "127.0.0.1:15010" || o.AdminAddress != "127.0.0.1:15000" || level != slog.LevelInfo {
		t.Errorf("addresses %q %q level %v", o.XDSAddress, o.AdminAddress, level)
	}
	if o.ListenerDrain != 5*time.Second {
		t.Errorf("listener drain %v, want 5s", o.ListenerDrain)
	}
	if id.ID != contract.DefaultNodeID("127.0.0.1", "reviews-v2", "default") || id.Namespace != "default" ||
		!slices.Equal(id.IPs, []string{"127.0.0.1"}) || id.OutboundAddress != contract.DefaultOutboundAddress {
		t.Errorf("identity %+v", id)
	}
}

func TestParseFlags(t *testing.T) {
	o, level, err := parseFlags([]string{
		"--xds-address", "cp:15010", "--admin-address", ":0", "--namespace", "shop", "--workload", "reviews-v2",
		"--labels", "app=reviews,version=v2", "--ip", "127.0.0.2,10.0.0.1", "--ip", "::1",
		"--service-account", "reviews", "--outbound", "", "--app-port", "9080=127.0.0.1:18080",
		"--app-port", "9090=127.0.0.1:19090", "--log-level", "debug", "--listener-drain-time", "30s",
	}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	id := o.Identity
	if id.ID != "sidecar~127.0.0.2~reviews-v2.shop~shop.svc.cluster.local" {
		t.Errorf("id = %q", id.ID)
	}
	if !slices.Equal(id.IPs, []string{"127.0.0.2", "10.0.0.1", "::1"}) || id.OutboundAddress != "" || id.ServiceAccount != "reviews" {
		t.Errorf("identity %+v", id)
	}
	if !maps.Equal(id.Labels, map[string]string{"app": "reviews", "version": "v2"}) {
		t.Errorf("labels %v", id.Labels)
	}
	if !maps.Equal(id.AppPorts, map[uint32]string{9080: "127.0.0.1:18080", 9090: "127.0.0.1:19090"}) {
		t.Errorf("app ports %v", id.AppPorts)
	}
	if level != slog.LevelDebug || o.XDSAddress != "cp:15010" || o.AdminAddress != ":0" || o.ListenerDrain != 30*time.Second {
		t.Errorf("options %+v level %v", o, level)
	}
}

func TestBadFlagsExit2(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--ip", "not-an-ip"}, `--ip "not-an-ip"`},
		{[]string{"--labels", "app"}, `--labels "app"`},
		{[]string{"--app-port", "x=1.2.3.4:5"}, "--app-port"},
		{[]string{"--app-port", "9080=nohostport"}, "--app-port 9080=nohostport"},
		{[]string{"--log-level", "loud"}, `--log-level "loud"`},
		{[]string{"--xds-address", "nope"}, `--xds-address "nope"`},
		{[]string{"--outbound", "127.0.0.1"}, `--outbound "127.0.0.1"`},
		{[]string{"--namespace", ""}, "--namespace"},
		{[]string{"--listener-drain-time", "0s"}, "--listener-drain-time 0s: must be positive"},
		{[]string{"--no-such-flag"}, "no-such-flag"},
		{[]string{"extra"}, "unexpected arguments"},
	} {
		var stderr bytes.Buffer
		if code := run(context.Background(), append([]string{"--workload", "w"}, tc.args...), &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2", tc.args, code)
		}
		if !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: stderr %q does not mention %q", tc.args, stderr.String(), tc.want)
		}
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // as if SIGTERM arrived at once: start, then shut down cleanly
	var stderr bytes.Buffer
	if code := run(ctx, []string{"--workload", "w", "--admin-address", "127.0.0.1:0", "--xds-address", "127.0.0.1:1"}, &stderr); code != 0 {
		t.Errorf("exit %d, stderr:\n%s", code, stderr.String())
	}
}
