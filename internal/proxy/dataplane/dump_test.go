package dataplane

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"weft.dev/weft/internal/xds/contract"
)

// A typed config of a type the binary does not link must not turn the
// whole /config_dump into an error (it did, with the real weft-proxy
// binary): it is shown with its type URL and its bytes, everything else
// in full, including Anys nested in a known Any (an inline route
// configuration inside an HTTP connection manager).
func TestConfigDumpShowsUnknownTypedConfigAsBytes(t *testing.T) {
	const unknownURL = "type.googleapis.com/example.weft.v1.NotLinked"
	raw := []byte{0x0a, 0x03, 'a', 'b', 'c'} // field 1: "abc"
	withUnknown := func(name string) *route.RouteConfiguration {
		r := toCluster("all", prefixMatch("/"), "a")
		r.GetRoute().RetryPolicy = &route.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(1),
			RetryHostPredicate: []*route.RetryPolicy_RetryHostPredicate{{Name: previousHostsPredicateName,
				ConfigType: &route.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: unknownURL, Value: raw}}}}}
		return routeConfig(name, vhost("v", []string{"*"}, r))
	}
	d := newDataplane(t, contract.Identity{}, nil)
	mustApply(t, d, resources(edsCluster(t, "a", false, "reviews.default.svc.cluster.local"), cla("a", ep{Addr: "127.0.0.1:9"}),
		withUnknown("r"),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil),
		httpListener(t, "in", core.TrafficDirection_INBOUND, "", withUnknown("inline"))))

	b, err := d.ConfigDump()
	if err != nil {
		t.Fatalf("ConfigDump: %v", err)
	}
	var dump map[string]any
	if err := json.Unmarshal(b, &dump); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, b)
	}
	want := base64.StdEncoding.EncodeToString(raw)
	for _, section := range []string{"routes", "listeners"} {
		var found []any
		findTyped(dump[section], unknownURL, func(obj map[string]any) { found = append(found, obj["value"]) })
		if len(found) != 1 || found[0] != want {
			t.Errorf("%s: unknown typed config rendered as %v, want one {\"@type\": %q, \"value\": %q}:\n%s", section, found, unknownURL, want, b)
		}
	}
	for _, s := range []string{`"statPrefix": "in"`, `"statPrefix": "out"`, `"retryOn": "5xx"`, `"clusterName": "a"`} {
		if !strings.Contains(string(b), s) {
			t.Errorf("dump lacks %s:\n%s", s, b)
		}
	}
	if strings.Contains(string(b), "dumpError") {
		t.Errorf("a resource failed to render:\n%s", b)
	}
}

// A resource that cannot be rendered at all (a known type whose bytes do
// not decode) is named with the reason; the rest of the dump stands.
func TestConfigDumpResourceErrorIsLocal(t *testing.T) {
	var logged []string
	var b bytes.Buffer
	s := &dumpStream{w: bufio.NewWriter(&b), r: &dumper{log: func(msg string, _ ...any) { logged = append(logged, msg) }}}
	bad := routeConfig("bad", vhost("v", []string{"*"}, toCluster("all", prefixMatch("/"), "a")))
	bad.VirtualHosts[0].TypedPerFilterConfig = map[string]*anypb.Any{
		faultFilterName: {TypeUrl: "type.googleapis.com/" + string((&faultv3.HTTPFault{}).ProtoReflect().Descriptor().FullName()), Value: []byte{0xff}},
	}
	s.str("{")
	dumpAll(s, "routes", map[string]*route.RouteConfiguration{"bad": bad, "good": routeConfig("good")}, nil, func() *route.RouteConfiguration { return &route.RouteConfiguration{} })
	s.str("}")
	if err := s.w.Flush(); err != nil {
		t.Fatal(err)
	}
	var out struct{ Routes []map[string]any }
	if err := json.Unmarshal(b.Bytes(), &out); err != nil {
		t.Fatalf("%v:\n%s", err, b.Bytes())
	}
	if len(out.Routes) != 2 {
		t.Fatalf("dumped %d resources, want 2", len(out.Routes))
	}
	first, second := out.Routes[0], out.Routes[1]
	if first["name"] != "bad" || !strings.Contains(first["dumpError"].(string), "HTTPFault") || second["name"] != "good" {
		t.Errorf("dump: %s", b.Bytes())
	}
	if len(logged) != 1 {
		t.Errorf("logged %q, want one line", logged)
	}
}

// findTyped calls f with every JSON object whose "@type" is url.
func findTyped(v any, url string, f func(map[string]any)) {
	switch v := v.(type) {
	case map[string]any:
		if v["@type"] == url {
			f(v)
		}
		for _, x := range v {
			findTyped(x, url, f)
		}
	case []any:
		for _, x := range v {
			findTyped(x, url, f)
		}
	}
}

// failAfter fails every write once n bytes were written.
type failAfter struct{ n int }

func (f *failAfter) Write(p []byte) (int, error) {
	if f.n -= len(p); f.n < 0 {
		return 0, errors.New("client gone")
	}
	return len(p), nil
}

// TestWriteConfigDumpStopsWhenTheClientIsGone: a write error ends the
// dump with that error (and the rendering with it).
func TestWriteConfigDumpStopsWhenTheClientIsGone(t *testing.T) {
	d := newDataplane(t, contract.Identity{}, nil)
	var rs []any
	for i := range 200 {
		n := "c" + strconv.Itoa(i)
		rs = append(rs, edsCluster(t, n, false, ""), cla(n, ep{Addr: "127.0.0.1:9"}))
	}
	mustApply(t, d, resourcesAny(rs...))
	err := d.WriteConfigDump(&failAfter{n: 40 << 10})
	if err == nil || !strings.Contains(err.Error(), "client gone") {
		t.Fatalf("WriteConfigDump to a writer that fails: %v, want its error", err)
	}
}
