package celexpr

import (
	"strings"
	"testing"
)

type attrs map[Attr]string

func (a attrs) Attr(x Attr) (string, bool) { v, ok := a[x]; return v, ok }

func TestParseValueEval(t *testing.T) {
	src := attrs{
		{ID: RequestHeader, Key: "x-user"}:        "alice",
		{ID: RequestHost}:                         "reviews:9080",
		{ID: RequestMethod}:                       "GET",
		{ID: DestinationPort}:                     "9080",
		{ID: ResponseCode}:                        "503",
		{ID: NodeMetadata, Key: "NAMESPACE"}:      "shop",
		{ID: NodeLabel, Key: "app"}:               "frontend",
		{ID: UpstreamPeer, Key: PeerVersion}:      "v2",
		{ID: DownstreamPeer, Key: PeerApp}:        "web",
		{ID: ClusterName}:                         "outbound|9080||reviews.shop.svc.cluster.local",
		{ID: ResponseHeader, Key: "content-type"}: "text/plain",
	}
	for _, c := range []struct {
		expr, want string
		ok         bool
	}{
		{`'proxy'`, "proxy", true},
		{`"double"`, "double", true},
		{`request.headers['X-User']`, "alice", true},
		{`request.headers["x-user"]`, "alice", true},
		{`request.headers['x-missing']`, "", false},
		{`request.host`, "reviews:9080", true},
		{`string(destination.port)`, "9080", true},
		{`request.method + ':' + string(response.code)`, "GET:503", true},
		{`'_' + xds.node.metadata['NAMESPACE']`, "_shop", true},
		{`node.metadata.NAMESPACE`, "shop", true},
		{`xds.node.metadata['LABELS'].app`, "frontend", true},
		{`xds.node.metadata.LABELS['app']`, "frontend", true},
		{`filter_state.upstream_peer.labels['version']`, "v2", true},
		{`upstream_peer.version`, "v2", true},
		{`downstream_peer.app`, "web", true},
		{`filter_state.downstream_peer.labels.app`, "web", true},
		{`xds.cluster_name`, "outbound|9080||reviews.shop.svc.cluster.local", true},
		{`response.headers['Content-Type']`, "text/plain", true},
		{`has(request.headers['x-user']) ? request.headers['x-user'] : 'anonymous'`, "alice", true},
		{`has(request.headers['x-nobody']) ? request.headers['x-nobody'] : 'anon' + 'ymous'`, "anonymous", true},
		{`('a' + 'b') + 'c'`, "abc", true},
		{`42`, "42", true},
		{`'x' + request.headers['x-missing']`, "", false},
	} {
		v, err := ParseValue(c.expr)
		if err != nil {
			t.Errorf("ParseValue(%q): %v", c.expr, err)
			continue
		}
		got, ok := v.Eval(src)
		if got != c.want || ok != c.ok {
			t.Errorf("Eval(%q) = %q, %v; want %q, %v", c.expr, got, ok, c.want, c.ok)
		}
		if v.String() != c.expr {
			t.Errorf("String() = %q, want %q", v.String(), c.expr)
		}
	}
}

func TestParseValueErrors(t *testing.T) {
	for _, c := range []struct{ expr, want string }{
		{``, "empty"},
		{`'open`, "column 1: unterminated string"},
		{`request.headers[x]`, "column 17: want a key in quotes"},
		{`request.size`, "column 1: unsupported attribute request.size"},
		{`upstream_peer.labels['role']`, "unsupported attribute upstream_peer.labels.role"},
		{`request.host == 'a'`, "column 14: unexpected \"==\""},
		{`'a' +`, "ends too early"},
		{`has(request.host)`, "only as the condition"},
		{`has(request.host) ? 'a'`, `want ":"`},
		{`size(request.host)`, "unsupported attribute size"},
		{`request.host $`, "unexpected character '$'"},
		{`xds.node.metadata['LABELS']['a']['b']`, "unsupported attribute"},
	} {
		_, err := ParseValue(c.expr)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseValue(%q) = %v, want an error containing %q", c.expr, err, c.want)
		}
	}
}

func TestAttrs(t *testing.T) {
	v, err := ParseValue(`has(request.headers['a']) ? request.host : 'x' + source.port`)
	if err != nil {
		t.Fatal(err)
	}
	got := v.Attrs()
	want := []Attr{{ID: RequestHeader, Key: "a"}, {ID: RequestHost}, {ID: SourcePort}}
	if len(got) != len(want) {
		t.Fatalf("Attrs() = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Attrs() = %v, want %v", got, want)
		}
	}
}

func BenchmarkEvalHeader(b *testing.B) {
	v, _ := ParseValue(`request.headers['x-user']`)
	src := attrs{{ID: RequestHeader, Key: "x-user"}: "alice"}
	b.ReportAllocs()
	for b.Loop() {
		v.Eval(src)
	}
}
