package config

import (
	"strings"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
)

func TestValidateRouteActions(t *testing.T) {
	tests := []struct {
		name string
		r    *networking.HTTPRoute
		want string // "" = valid
	}{
		{"regex rewrite ok", &networking.HTTPRoute{Rewrite: &networking.HTTPRewrite{UriRegexRewrite: &networking.RegexRewrite{Match: `^/a/(.*)$`, Rewrite: `/\1`}}}, ""},
		{"bad regex", &networking.HTTPRoute{Rewrite: &networking.HTTPRewrite{UriRegexRewrite: &networking.RegexRewrite{Match: `(`, Rewrite: "/"}}},
			"p.rewrite.uriRegexRewrite.match: invalid RE2 regex"},
		{"uri and regex", &networking.HTTPRoute{Rewrite: &networking.HTTPRewrite{Uri: "/x", UriRegexRewrite: &networking.RegexRewrite{Match: `a`}}},
			"p.rewrite: uri and uriRegexRewrite are mutually exclusive"},
		{"rewrite group out of range", &networking.HTTPRoute{Rewrite: &networking.HTTPRewrite{UriRegexRewrite: &networking.RegexRewrite{Match: `^/a/(.*)$`, Rewrite: `/\2`}}},
			`p.rewrite.uriRegexRewrite.rewrite: rewrite "/\\2" refers to group \2, but match has 1 capture groups`},
		{"redirect 307", &networking.HTTPRoute{Redirect: &networking.HTTPRedirect{Uri: "/v2", RedirectCode: 307}}, ""},
		{"redirect changes nothing", &networking.HTTPRoute{Redirect: &networking.HTTPRedirect{RedirectCode: 307}}, "p.redirect: a redirect must change at least one of"},
		{"redirect 200", &networking.HTTPRoute{Redirect: &networking.HTTPRedirect{Uri: "/v2", RedirectCode: 200}}, "p.redirect.redirectCode: redirect code 200"},
		{"direct 700", &networking.HTTPRoute{DirectResponse: &networking.HTTPDirectResponse{Status: 700}}, "p.directResponse.status: HTTP status 700 out of range"},
		{"direct 600", &networking.HTTPRoute{DirectResponse: &networking.HTTPDirectResponse{Status: 600}}, "p.directResponse.status: HTTP status 600 out of range 200-599"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var is issues
			validateRewrite(&is, "p.rewrite", tc.r.GetRewrite())
			validateRedirect(&is, "p.redirect", tc.r.GetRedirect(), tc.r.GetMatch())
			validateDirectResponse(&is, "p.directResponse", tc.r.GetDirectResponse())
			var got string
			if len(is) > 0 {
				got = is[0].Path + ": " + is[0].Message
			}
			if (tc.want == "") != (got == "") || !strings.HasPrefix(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
