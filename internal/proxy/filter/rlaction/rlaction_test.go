package rlaction

import (
	"net/http/httptest"
	"net/netip"
	"slices"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"weft.dev/weft/internal/proxy/filter"
)

func compile(t *testing.T, js string) []Action {
	t.Helper()
	var rl routev3.RateLimit
	if err := protojson.Unmarshal([]byte(js), &rl); err != nil {
		t.Fatal(err)
	}
	acts, err := Compile(&rl)
	if err != nil {
		t.Fatal(err)
	}
	return acts
}

// TestDescriptor: each action as Envoy runs it, and an entry that yields
// nothing leaves what was appended before untouched.
func TestDescriptor(t *testing.T) {
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("x-user", "alice")
	req.Header.Set("x-plan", "free")
	s := &filter.Stream{Request: req, RemoteIP: netip.MustParseAddr("::ffff:10.0.0.7")}
	prefix := []Entry{{"earlier", "x"}}
	for _, c := range []struct {
		name, rl string
		want     []Entry // nil: no descriptor
	}{
		{"headers, address and generic key", `{"actions": [{"requestHeaders": {"headerName": "x-user", "descriptorKey": "user"}},
			{"remoteAddress": {}}, {"genericKey": {"descriptorValue": "api"}}]}`,
			[]Entry{{"user", "alice"}, {"remote_address", "10.0.0.7"}, {"generic_key", "api"}}},
		{"absent header", `{"actions": [{"genericKey": {"descriptorValue": "api"}}, {"requestHeaders": {"headerName": "x-none", "descriptorKey": "k"}}]}`, nil},
		{"absent header skipped", `{"actions": [{"requestHeaders": {"headerName": "x-none", "descriptorKey": "k", "skipIfAbsent": true}},
			{"genericKey": {"descriptorKey": "route", "descriptorValue": "api"}}]}`, []Entry{{"route", "api"}}},
		{"only skipped", `{"actions": [{"requestHeaders": {"headerName": "x-none", "descriptorKey": "k", "skipIfAbsent": true}}]}`, nil},
		{"header value match", `{"actions": [{"headerValueMatch": {"descriptorValue": "free", "headers": [{"name": "x-plan", "stringMatch": {"exact": "free"}}]}}]}`,
			[]Entry{{"header_match", "free"}}},
		{"header value match expected not to match", `{"actions": [{"headerValueMatch": {"descriptorValue": "paid", "expectMatch": false,
			"headers": [{"name": "x-plan", "stringMatch": {"exact": "free"}}]}}]}`, nil},
	} {
		got, ok := Descriptor(s, compile(t, c.rl), slices.Clone(prefix))
		if ok != (c.want != nil) || !slices.Equal(got, append(slices.Clone(prefix), c.want...)) {
			t.Errorf("%s: got %v, %v; want %v", c.name, got, ok, c.want)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	for js, want := range map[string]string{
		`{}`: "actions: at least one action is required",
		`{"actions": [{"requestHeaders": {"headerName": "x"}}]}`: "actions[0].request_headers: header_name and descriptor_key are required",
		`{"actions": [{"genericKey": {}}]}`:                      "actions[0].generic_key.descriptor_value: required",
		`{"stage": 1, "actions": [{"remoteAddress": {}}]}`:       "stage, disable_key, limit and apply_on_stream_done: unsupported",
	} {
		var rl routev3.RateLimit
		if err := protojson.Unmarshal([]byte(js), &rl); err != nil {
			t.Fatal(err)
		}
		if _, err := CompileAll([]*routev3.RateLimit{&rl}); err == nil || err.Error() != "rate_limits[0]."+want {
			t.Errorf("%s: error %v, want rate_limits[0].%s", js, err, want)
		}
	}
}
