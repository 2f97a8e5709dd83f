package matcher

import (
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestString(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    *matcherv3.StringMatcher
		in   string
		want bool
	}{
		{"exact", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "Abc"}}, "Abc", true},
		{"exact is case sensitive", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "Abc"}}, "abc", false},
		{"exact ignore case", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "Abc"}, IgnoreCase: true}, "aBC", true},
		{"prefix", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "ab"}}, "abc", true},
		{"prefix ignore case", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "AB"}, IgnoreCase: true}, "abc", true},
		{"suffix", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".css"}}, "/a.css", true},
		{"suffix longer than input", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".css"}}, "ss", false},
		{"contains ignore case", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "MID"}, IgnoreCase: true}, "a-mid-b", true},
		{"regex matches the whole input", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "[0-9]+"}}}, "12x", false},
		{"regex", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "[0-9]+"}}}, "12", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := CompileString(tc.m)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Match(tc.in); got != tc.want {
				t.Errorf("Match(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
	for _, bad := range []*matcherv3.StringMatcher{
		{},
		{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "("}}},
	} {
		if _, err := CompileString(bad); err == nil {
			t.Errorf("CompileString(%v): want an error", bad)
		}
	}
}

func TestHeader(t *testing.T) {
	exact := func(s string) *route.HeaderMatcher_StringMatch {
		return &route.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}}
	}
	r := httptest.NewRequest("POST", "http://svc/p?q=1", nil)
	r.Header.Add("X-Multi", "a")
	r.Header.Add("X-Multi", "b")
	r.Header.Set("X-Empty", "")
	for _, tc := range []struct {
		name string
		h    *route.HeaderMatcher
		want bool
	}{
		{"several values are joined", &route.HeaderMatcher{Name: "x-multi", HeaderMatchSpecifier: exact("a,b")}, true},
		{":method", &route.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: exact("POST")}, true},
		{":path has the query", &route.HeaderMatcher{Name: ":path", HeaderMatchSpecifier: exact("/p?q=1")}, true},
		{":authority", &route.HeaderMatcher{Name: ":authority", HeaderMatchSpecifier: exact("svc")}, true},
		{"no specifier means present", &route.HeaderMatcher{Name: "x-empty"}, true},
		{"present false", &route.HeaderMatcher{Name: "x-absent", HeaderMatchSpecifier: &route.HeaderMatcher_PresentMatch{PresentMatch: false}}, true},
		{"absent does not match", &route.HeaderMatcher{Name: "x-absent", HeaderMatchSpecifier: exact("")}, false},
		{"absent treated as empty", &route.HeaderMatcher{Name: "x-absent", HeaderMatchSpecifier: exact(""), TreatMissingHeaderAsEmpty: true}, true},
		{"inverted", &route.HeaderMatcher{Name: "x-multi", HeaderMatchSpecifier: exact("v"), InvertMatch: true}, true},
		// Envoy's treat_missing_header_as_empty examples: a missing header
		// is ignored by an inverted value matcher (no match) unless it is
		// treated as empty.
		{"inverted, absent", &route.HeaderMatcher{Name: "x-absent", HeaderMatchSpecifier: exact("v"), InvertMatch: true}, false},
		{"inverted, absent as empty", &route.HeaderMatcher{Name: "x-absent", HeaderMatchSpecifier: exact("v"), InvertMatch: true, TreatMissingHeaderAsEmpty: true}, true},
		{"inverted any, absent as empty", &route.HeaderMatcher{Name: "x-absent", HeaderMatchSpecifier: &route.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherv3.RegexMatcher{Regex: ".*"}}, InvertMatch: true, TreatMissingHeaderAsEmpty: true}, false},
		{"inverted present, absent", &route.HeaderMatcher{Name: "x-absent", HeaderMatchSpecifier: &route.HeaderMatcher_PresentMatch{PresentMatch: true}, InvertMatch: true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := CompileHeader(tc.h)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Match(r); got != tc.want {
				t.Errorf("Match = %v, want %v", got, tc.want)
			}
		})
	}
	if _, err := CompileHeader(&route.HeaderMatcher{Name: ":status"}); err == nil || !strings.Contains(err.Error(), "pseudo-header") {
		t.Errorf(":status: err = %v", err)
	}
}

func TestQuery(t *testing.T) {
	q := url.Values{"v": {"2", "3"}, "debug": {""}}
	for _, tc := range []struct {
		name string
		m    *route.QueryParameterMatcher
		want bool
	}{
		{"first value", &route.QueryParameterMatcher{Name: "v", QueryParameterMatchSpecifier: &route.QueryParameterMatcher_StringMatch{
			StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "2"}}}}, true},
		{"not the second", &route.QueryParameterMatcher{Name: "v", QueryParameterMatchSpecifier: &route.QueryParameterMatcher_StringMatch{
			StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "3"}}}}, false},
		{"present", &route.QueryParameterMatcher{Name: "debug", QueryParameterMatchSpecifier: &route.QueryParameterMatcher_PresentMatch{PresentMatch: true}}, true},
		{"absent", &route.QueryParameterMatcher{Name: "x"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := CompileQuery(tc.m)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Match(q); got != tc.want {
				t.Errorf("Match = %v, want %v", got, tc.want)
			}
		})
	}
	if _, err := CompileQuery(&route.QueryParameterMatcher{Name: "x", QueryParameterMatchSpecifier: &route.QueryParameterMatcher_PresentMatch{}}); err == nil {
		t.Error("present_match false: want an error")
	}
}
