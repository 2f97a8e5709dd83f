package route

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestUpgradeConfigs: RouteAction.upgrade_configs become the route's
// per-type override (types lower case, enabled by default), idle_timeout
// its stream idle timeout; what the proxy cannot do is refused, naming
// the field.
func TestUpgradeConfigs(t *testing.T) {
	withAction := func(mod func(*route.RouteAction)) *route.Route {
		r := toCluster("ws", prefixMatch("/"), "a")
		mod(r.GetRoute())
		return r
	}
	tab, err := Compile(routeConfig("rc", vhost("v", []string{"*"}, withAction(func(a *route.RouteAction) {
		a.UpgradeConfigs = []*route.RouteAction_UpgradeConfig{{UpgradeType: "WebSocket"}, {UpgradeType: "spdy/3.1", Enabled: wrapperspb.Bool(false)}}
		a.IdleTimeout = durationpb.New(90 * time.Second)
	}))), nil)
	if err != nil {
		t.Fatal(err)
	}
	re := tab.Route(httptest.NewRequest("GET", "http://svc/", nil))
	if re == nil {
		t.Fatal("no route")
	}
	if len(re.Upgrades) != 2 || !re.Upgrades["websocket"] || re.Upgrades["spdy/3.1"] {
		t.Errorf("Upgrades = %v, want websocket on, spdy/3.1 off", re.Upgrades)
	}
	if re.IdleTimeout == nil || *re.IdleTimeout != 90*time.Second {
		t.Errorf("IdleTimeout = %v, want 90s", re.IdleTimeout)
	}

	for _, tc := range []struct {
		name string
		mod  func(*route.RouteAction)
		want string
	}{
		{"empty type", func(a *route.RouteAction) { a.UpgradeConfigs = []*route.RouteAction_UpgradeConfig{{}} }, "upgrade_configs[0].upgrade_type: empty"},
		{"connect_config", func(a *route.RouteAction) {
			a.UpgradeConfigs = []*route.RouteAction_UpgradeConfig{{UpgradeType: "CONNECT", ConnectConfig: &route.RouteAction_UpgradeConfig_ConnectConfig{}}}
		}, "upgrade_configs[0].connect_config: unsupported"},
		{"negative idle_timeout", func(a *route.RouteAction) { a.IdleTimeout = &durationpb.Duration{Seconds: -1} }, "idle_timeout: invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(routeConfig("rc", vhost("v", []string{"*"}, withAction(tc.mod))), nil)
			if err == nil || !strings.Contains(err.Error(), "routes[0]") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want routes[0]: …%s", err, tc.want)
			}
		})
	}
}
