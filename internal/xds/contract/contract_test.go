package contract_test

import (
	"maps"
	"reflect"
	"slices"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"weft.dev/weft/internal/xds/contract"
)

func TestParseAppPorts(t *testing.T) {
	tests := []struct {
		in   string
		want map[uint32]string
	}{
		{"", map[uint32]string{}},
		{"   ", map[uint32]string{}},
		{"9080=127.0.0.1:18080", map[uint32]string{9080: "127.0.0.1:18080"}},
		{"9080=127.0.0.1:18080,9090=127.0.0.2:19090", map[uint32]string{9080: "127.0.0.1:18080", 9090: "127.0.0.2:19090"}},
		{" 9080=127.0.0.1:18080 , 9090=[::1]:19090 ", map[uint32]string{9080: "127.0.0.1:18080", 9090: "[::1]:19090"}},
		{"1=a:1,65535=b:2", map[uint32]string{1: "a:1", 65535: "b:2"}},
		// The value is not checked here (weft-proxy checks --app-port), and
		// a repeated port keeps the last value.
		{"9080=anything", map[uint32]string{9080: "anything"}},
		{"9080=a:1,9080=b:2", map[uint32]string{9080: "b:2"}},
	}
	for _, tt := range tests {
		got, err := contract.ParseAppPorts(tt.in)
		if err != nil {
			t.Errorf("ParseAppPorts(%q): unexpected error %v", tt.in, err)
			continue
		}
		if got == nil || !maps.Equal(got, tt.want) {
			t.Errorf("ParseAppPorts(%q) = %#v, want %#v", tt.in, got, tt.want)
		}
	}
}

func TestParseAppPortsErrors(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
	}{
		{"9080", `WEFT_APP_PORTS: "9080": want port=host:port`},
		{"9080=", `WEFT_APP_PORTS: "9080=": want port=host:port`},
		{"9080=a:1,", `WEFT_APP_PORTS: "": want port=host:port`},
		{"9080=a:1,,9090=b:2", `WEFT_APP_PORTS: "": want port=host:port`},
		{"127.0.0.1:18080", `WEFT_APP_PORTS: "127.0.0.1:18080": want port=host:port`},
		{"=127.0.0.1:18080", `WEFT_APP_PORTS: "=127.0.0.1:18080": bad port ""`},
		{"0=127.0.0.1:18080", `WEFT_APP_PORTS: "0=127.0.0.1:18080": bad port "0"`},
		{"65536=127.0.0.1:18080", `WEFT_APP_PORTS: "65536=127.0.0.1:18080": bad port "65536"`},
		{"-1=127.0.0.1:18080", `WEFT_APP_PORTS: "-1=127.0.0.1:18080": bad port "-1"`},
		{"http=127.0.0.1:18080", `WEFT_APP_PORTS: "http=127.0.0.1:18080": bad port "http"`},
		{"9080 = 127.0.0.1:18080", `WEFT_APP_PORTS: "9080 = 127.0.0.1:18080": bad port "9080 "`},
		{"9080=a:1, 9090", `WEFT_APP_PORTS: " 9090": want port=host:port`},
	}
	for _, tt := range tests {
		got, err := contract.ParseAppPorts(tt.in)
		if err == nil {
			t.Errorf("ParseAppPorts(%q) = %v, want error %s", tt.in, got, tt.wantErr)
			continue
		}
		if err.Error() != tt.wantErr {
			t.Errorf("ParseAppPorts(%q) error\n  %s\nwant\n  %s", tt.in, err, tt.wantErr)
		}
		if got != nil {
			t.Errorf("ParseAppPorts(%q) returned %v with its error, want nil", tt.in, got)
		}
	}
}

func TestFormatAppPorts(t *testing.T) {
	tests := []struct {
		in   map[uint32]string
		want string
	}{
		{nil, ""},
		{map[uint32]string{}, ""},
		{map[uint32]string{9080: "127.0.0.1:18080"}, "9080=127.0.0.1:18080"},
		{map[uint32]string{9090: "b:2", 80: "a:1", 9080: "c:3"}, "80=a:1,9080=c:3,9090=b:2"},
	}
	for _, tt := range tests {
		got := contract.FormatAppPorts(tt.in)
		if got != tt.want {
			t.Errorf("FormatAppPorts(%v) = %q, want %q", tt.in, got, tt.want)
		}
		back, err := contract.ParseAppPorts(got)
		if err != nil || len(back) != len(tt.in) || (len(tt.in) > 0 && !maps.Equal(back, tt.in)) {
			t.Errorf("ParseAppPorts(FormatAppPorts(%v)) = %v, %v; want the input back", tt.in, back, err)
		}
	}
}

func TestAppAddress(t *testing.T) {
	ap := map[uint32]string{9080: "127.0.0.1:18080"}
	for _, tt := range []struct {
		m    map[uint32]string
		port uint32
		want string
	}{
		{ap, 9080, "127.0.0.1:18080"},
		{ap, 9090, "127.0.0.1:9090"},
		{nil, 8080, "127.0.0.1:8080"},
	} {
		if got := contract.AppAddress(tt.m, tt.port); got != tt.want {
			t.Errorf("AppAddress(%v, %d) = %q, want %q", tt.m, tt.port, got, tt.want)
		}
	}
}

func TestClusterNameRoundTrip(t *testing.T) {
	tests := []struct {
		dir    contract.Direction
		port   uint32
		subset string
		host   string
		want   string
	}{
		{contract.Outbound, 9080, "", "reviews.default.svc.cluster.local", "outbound|9080||reviews.default.svc.cluster.local"},
		{contract.Outbound, 9080, "v2", "reviews.default.svc.cluster.local", "outbound|9080|v2|reviews.default.svc.cluster.local"},
		{contract.Outbound, 443, "", "api.example.com", "outbound|443||api.example.com"},
		{contract.Outbound, 80, "canary", "*.example.com", "outbound|80|canary|*.example.com"},
		{contract.Inbound, 9080, "", "", "inbound|9080||"},
		{contract.Inbound, 1, "", "", "inbound|1||"},
		{contract.Outbound, 65535, "a-b.c", "h", "outbound|65535|a-b.c|h"},
	}
	for _, tt := range tests {
		name := contract.ClusterName(tt.dir, tt.port, tt.subset, tt.host)
		if name != tt.want {
			t.Errorf("ClusterName(%s, %d, %q, %q) = %q, want %q", tt.dir, tt.port, tt.subset, tt.host, name, tt.want)
		}
		dir, port, subset, host, err := contract.ParseClusterName(name)
		if err != nil {
			t.Errorf("ParseClusterName(%q): %v", name, err)
			continue
		}
		if dir != tt.dir || port != tt.port || subset != tt.subset || host != tt.host {
			t.Errorf("ParseClusterName(%q) = %s, %d, %q, %q; want %s, %d, %q, %q",
				name, dir, port, subset, host, tt.dir, tt.port, tt.subset, tt.host)
		}
	}
}

func TestParseClusterNameErrors(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
	}{
		{"", `cluster name "": want direction|port|subset|host`},
		{"outbound|9080|v1", `cluster name "outbound|9080|v1": want direction|port|subset|host`},
		{"outbound|9080|v1|a|b", `cluster name "outbound|9080|v1|a|b": want direction|port|subset|host`},
		{"reviews.default.svc.cluster.local", `cluster name "reviews.default.svc.cluster.local": want direction|port|subset|host`},
		{"outbound|http|v1|reviews", `cluster name "outbound|http|v1|reviews": bad port: strconv.ParseUint: parsing "http": invalid syntax`},
		{"outbound||v1|reviews", `cluster name "outbound||v1|reviews": bad port: strconv.ParseUint: parsing "": invalid syntax`},
		{"outbound|-1||reviews", `cluster name "outbound|-1||reviews": bad port: strconv.ParseUint: parsing "-1": invalid syntax`},
		{"outbound|4294967296||reviews", `cluster name "outbound|4294967296||reviews": bad port: strconv.ParseUint: parsing "4294967296": value out of range`},
	}
	for _, tt := range tests {
		_, _, _, _, err := contract.ParseClusterName(tt.in)
		if err == nil {
			t.Errorf("ParseClusterName(%q): no error, want %s", tt.in, tt.wantErr)
			continue
		}
		if err.Error() != tt.wantErr {
			t.Errorf("ParseClusterName(%q) error\n  %s\nwant\n  %s", tt.in, err, tt.wantErr)
		}
	}
}

func TestListenerAndRouteNames(t *testing.T) {
	if got, want := contract.ListenerName("10.0.0.1", 9080), "10.0.0.1_9080"; got != want {
		t.Errorf("ListenerName = %q, want %q", got, want)
	}
	if got, want := contract.ListenerName("127.0.0.1", 15001), "127.0.0.1_15001"; got != want {
		t.Errorf("ListenerName = %q, want %q", got, want)
	}
	if got, want := contract.InboundRouteName(9080), "inbound|9080||"; got != want {
		t.Errorf("InboundRouteName = %q, want %q", got, want)
	}
	if got, want := contract.OutboundRouteName(9080), "9080"; got != want {
		t.Errorf("OutboundRouteName = %q, want %q", got, want)
	}
}

func TestWorkloadMetadataRoundTrip(t *testing.T) {
	tests := []struct {
		workload, namespace, app, version, cluster string
		want                                       string
	}{
		{"reviews-v2", "default", "reviews", "v2", "", "reviews-v2;default;reviews;v2;"},
		{"reviews-v2", "default", "reviews", "v2", "Kubernetes", "reviews-v2;default;reviews;v2;Kubernetes"},
		{"", "", "", "", "", ";;;;"},
		{"10.0.0.1", "prod", "", "", "", "10.0.0.1;prod;;;"},
	}
	for _, tt := range tests {
		s := contract.WorkloadMetadata(tt.workload, tt.namespace, tt.app, tt.version, tt.cluster)
		if s != tt.want {
			t.Errorf("WorkloadMetadata(%q, %q, %q, %q, %q) = %q, want %q", tt.workload, tt.namespace, tt.app, tt.version, tt.cluster, s, tt.want)
		}
		w, ns, app, ver, cl := contract.ParseWorkloadMetadata(s)
		if got, want := []string{w, ns, app, ver, cl}, []string{tt.workload, tt.namespace, tt.app, tt.version, tt.cluster}; !slices.Equal(got, want) {
			t.Errorf("ParseWorkloadMetadata(%q) = %q, want %q", s, got, want)
		}
	}
}

func TestParseWorkloadMetadataShortAndLong(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", []string{"", "", "", "", ""}},
		{"reviews-v2", []string{"reviews-v2", "", "", "", ""}},
		{"reviews-v2;default", []string{"reviews-v2", "default", "", "", ""}},
		{"a;b;c;d;e;f", []string{"a", "b", "c", "d", "e;f"}}, // the cluster takes the rest
	}
	for _, tt := range tests {
		w, ns, app, ver, cl := contract.ParseWorkloadMetadata(tt.in)
		if got := []string{w, ns, app, ver, cl}; !slices.Equal(got, tt.want) {
			t.Errorf("ParseWorkloadMetadata(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestDefaultNodeID(t *testing.T) {
	if got, want := contract.DefaultNodeID("10.0.0.1", "reviews-v2", "prod"), "sidecar~10.0.0.1~reviews-v2.prod~prod.svc.cluster.local"; got != want {
		t.Errorf("DefaultNodeID = %q, want %q", got, want)
	}
}

func TestIdentityNodeRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   contract.Identity
		// want is what ParseNode returns; zero means in itself.
		want *contract.Identity
	}{
		{
			name: "full sidecar",
			in: contract.Identity{
				ID:              contract.DefaultNodeID("127.0.0.2", "reviews-v2", "default"),
				Namespace:       "default",
				WorkloadName:    "reviews-v2",
				Labels:          map[string]string{"app": "reviews", "version": "v2"},
				IPs:             []string{"127.0.0.2", "10.0.0.7"},
				ServiceAccount:  "reviews",
				ClusterID:       "Kubernetes",
				OutboundAddress: "127.0.0.1:15001",
				AppPorts:        map[uint32]string{9080: "127.0.0.1:18080", 9090: "127.0.0.1:19090"},
				AdminAddress:    "127.0.0.2:15000",
				MTLS:            true,
			},
		},
		{
			name: "captured sidecar",
			in: contract.Identity{
				ID: "sidecar~10.1.0.5~p.shop~shop.svc.cluster.local", Namespace: "shop", WorkloadName: "p",
				Labels: map[string]string{}, IPs: []string{"10.1.0.5"}, AppPorts: map[uint32]string{},
				InterceptionMode: contract.InterceptionRedirect,
			},
		},
		{
			name: "no outbound listener, no app ports",
			in: contract.Identity{
				ID: "gateway-1", Namespace: "edge", WorkloadName: "gw",
				Labels: map[string]string{"app": "gw"}, IPs: []string{"10.0.0.1"},
				ServiceAccount: "gw", AppPorts: map[uint32]string{},
			},
		},
		{
			name: "empty namespace reads back as default, nil maps as empty",
			in:   contract.Identity{ID: "n"},
			want: &contract.Identity{ID: "n", Namespace: "default", Labels: map[string]string{}, AppPorts: map[uint32]string{}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := tt.in.Node()
			if n.GetId() != tt.in.ID {
				t.Errorf("Node().Id = %q, want %q", n.GetId(), tt.in.ID)
			}
			if want := tt.in.WorkloadName + "." + tt.in.Namespace; n.GetCluster() != want {
				t.Errorf("Node().Cluster = %q, want %q", n.GetCluster(), want)
			}
			f := n.GetMetadata().GetFields()
			if _, ok := f[contract.MetaOutboundAddress]; ok != (tt.in.OutboundAddress != "") {
				t.Errorf("Node() metadata has %s: %v, want %v", contract.MetaOutboundAddress, ok, tt.in.OutboundAddress != "")
			}
			if _, ok := f[contract.MetaAdminAddress]; ok != (tt.in.AdminAddress != "") {
				t.Errorf("Node() metadata has %s: %v, want %v", contract.MetaAdminAddress, ok, tt.in.AdminAddress != "")
			}
			if _, ok := f[contract.MetaAppPorts]; ok != (len(tt.in.AppPorts) > 0) {
				t.Errorf("Node() metadata has %s: %v, want %v", contract.MetaAppPorts, ok, len(tt.in.AppPorts) > 0)
			}
			got, err := contract.ParseNode(n)
			if err != nil {
				t.Fatalf("ParseNode(Node()): %v", err)
			}
			want := tt.in
			if tt.want != nil {
				want = *tt.want
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("ParseNode(Node()) =\n  %#v\nwant\n  %#v", got, want)
			}
		})
	}
}

func TestNodeMetadataKeys(t *testing.T) {
	id := contract.Identity{
		ID: "x", Namespace: "default", WorkloadName: "reviews-v2",
		Labels: map[string]string{"app": "reviews"}, IPs: []string{"127.0.0.2", "10.0.0.7"},
		ServiceAccount: "reviews", OutboundAddress: "127.0.0.1:15001",
		AppPorts:         map[uint32]string{9090: "127.0.0.1:19090", 9080: "127.0.0.1:18080"},
		AdminAddress:     "127.0.0.2:15000",
		MTLS:             true,
		InterceptionMode: "REDIRECT",
	}
	f := id.Node().GetMetadata().GetFields()
	for key, want := range map[string]string{
		"NAMESPACE":             "default",
		"WORKLOAD_NAME":         "reviews-v2",
		"INSTANCE_IPS":          "127.0.0.2,10.0.0.7",
		"SERVICE_ACCOUNT":       "reviews",
		"CLUSTER_ID":            "",
		"WEFT_OUTBOUND_ADDRESS": "127.0.0.1:15001",
		"WEFT_APP_PORTS":        "9080=127.0.0.1:18080,9090=127.0.0.1:19090",
		"WEFT_ADMIN_ADDRESS":    "127.0.0.2:15000",
		"WEFT_MTLS":             "true",
		"INTERCEPTION_MODE":     "REDIRECT",
	} {
		if got := f[key].GetStringValue(); got != want {
			t.Errorf("metadata %s = %q, want %q", key, got, want)
		}
	}
	if got := f["LABELS"].GetStructValue().GetFields()["app"].GetStringValue(); got != "reviews" {
		t.Errorf("metadata LABELS.app = %q, want reviews", got)
	}
}

func TestParseNode(t *testing.T) {
	meta := func(fields map[string]any) *structpb.Struct {
		s, err := structpb.NewStruct(fields)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	t.Run("nil node", func(t *testing.T) {
		if _, err := contract.ParseNode(nil); err == nil || err.Error() != "xds node is missing" {
			t.Errorf("ParseNode(nil) error = %v, want xds node is missing", err)
		}
	})
	t.Run("bad app ports", func(t *testing.T) {
		n := &core.Node{Id: "sidecar~1", Metadata: meta(map[string]any{contract.MetaAppPorts: "9080"})}
		_, err := contract.ParseNode(n)
		want := `node "sidecar~1": WEFT_APP_PORTS: "9080": want port=host:port`
		if err == nil || err.Error() != want {
			t.Errorf("ParseNode error = %v, want %s", err, want)
		}
	})
	t.Run("interception modes", func(t *testing.T) {
		for mode, captured := range map[string]bool{"": false, "NONE": false, "REDIRECT": true} {
			id, err := contract.ParseNode(&core.Node{Id: "n", Metadata: meta(map[string]any{contract.MetaInterceptionMode: mode})})
			if err != nil || id.InterceptionMode != mode || id.Captured() != captured {
				t.Errorf("mode %q: ParseNode = %q captured=%v, %v", mode, id.InterceptionMode, id.Captured(), err)
			}
		}
		_, err := contract.ParseNode(&core.Node{Id: "n", Metadata: meta(map[string]any{contract.MetaInterceptionMode: "TPROXY"})})
		if want := `node "n": INTERCEPTION_MODE "TPROXY": want REDIRECT or NONE`; err == nil || err.Error() != want {
			t.Errorf("TPROXY: error = %v, want %s", err, want)
		}
	})
	t.Run("instance IPs are trimmed and blanks dropped", func(t *testing.T) {
		n := &core.Node{Id: "n", Metadata: meta(map[string]any{contract.MetaInstanceIPs: " 10.0.0.1 , ,10.0.0.2,"})}
		id, err := contract.ParseNode(n)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"10.0.0.1", "10.0.0.2"}; !slices.Equal(id.IPs, want) {
			t.Errorf("IPs = %q, want %q", id.IPs, want)
		}
	})
	t.Run("no metadata", func(t *testing.T) {
		id, err := contract.ParseNode(&core.Node{Id: "bare"})
		if err != nil {
			t.Fatal(err)
		}
		want := contract.Identity{ID: "bare", Namespace: "default", Labels: map[string]string{}, AppPorts: map[uint32]string{}}
		if !reflect.DeepEqual(id, want) {
			t.Errorf("ParseNode = %#v, want %#v", id, want)
		}
	})
	t.Run("non-string label values read as empty", func(t *testing.T) {
		n := &core.Node{Id: "n", Metadata: meta(map[string]any{contract.MetaLabels: map[string]any{"app": "x", "n": 3.0}})}
		id, err := contract.ParseNode(n)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[string]string{"app": "x", "n": ""}; !maps.Equal(id.Labels, want) {
			t.Errorf("Labels = %v, want %v", id.Labels, want)
		}
	})
}

func TestSortedLabelKeys(t *testing.T) {
	id := contract.Identity{Labels: map[string]string{"version": "v2", "app": "reviews", "stage": "canary"}}
	if got, want := id.SortedLabelKeys(), []string{"app", "stage", "version"}; !slices.Equal(got, want) {
		t.Errorf("SortedLabelKeys = %q, want %q", got, want)
	}
	if got := (contract.Identity{}).SortedLabelKeys(); len(got) != 0 {
		t.Errorf("SortedLabelKeys of no labels = %q, want none", got)
	}
}
