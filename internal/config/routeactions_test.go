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
		{"bad regex", &networking.HTTPRoute{Rewrite: &networking.HTTPRewrite{UriRegexRewrite: &networking.RegexRewrite{Match: `(`}}},
			"p.rewrite.uriRegexRewrite.match: invalid RE2 regex"},
		{"uri and regex", &networking.HTTPRoute{Rewrite: &networking.HTTPRewrite{Uri: "/x", UriRegexRewrite: &networking.RegexRewrite{Match: `a`}}},
			"p.rewrite: uri and uriRegexRewrite are mutually exclusive"},
		{"redirect 307", &networking.HTTPRoute{Redirect: &networking.HTTPRedirect{RedirectCode: 307}}, ""},
		{"redirect 200", &networking.HTTPRoute{Redirect: &networking.HTTPRedirect{RedirectCode: 200}}, "p.redirect.redirectCode: redirect code 200"},
		{"direct 700", &networking.HTTPRoute{DirectResponse: &networking.HTTPDirectResponse{Status: 700}}, "p.directResponse.status: status 700 out of range"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var is issues
			validateRouteActions(&is, "p", tc.r)
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
