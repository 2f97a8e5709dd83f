package route

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"weft.dev/weft/internal/proxy/urlpath"
)

// redirect is a compiled RedirectAction.
type redirect struct {
	code         int
	scheme       string // "" keeps the request's
	host         string // "" keeps the request's
	port         string // ":8080", or ""
	path         string // path_redirect; "" keeps the path
	pathHasQuery bool
	prefix       string // prefix_rewrite (with hasPrefix)
	hasPrefix    bool
	stripQuery   bool
}

var redirectCodes = map[route.RedirectAction_RedirectResponseCode]int{
	route.RedirectAction_MOVED_PERMANENTLY:  http.StatusMovedPermanently,
	route.RedirectAction_FOUND:              http.StatusFound,
	route.RedirectAction_SEE_OTHER:          http.StatusSeeOther,
	route.RedirectAction_TEMPORARY_REDIRECT: http.StatusTemporaryRedirect,
	route.RedirectAction_PERMANENT_REDIRECT: http.StatusPermanentRedirect,
}

func compileRedirect(a *route.RedirectAction) (*redirect, error) {
	rd := &redirect{host: a.GetHostRedirect(), stripQuery: a.GetStripQuery()}
	var ok bool
	if rd.code, ok = redirectCodes[a.GetResponseCode()]; !ok {
		return nil, fmt.Errorf("response_code: unknown %v", a.GetResponseCode())
	}
	switch s := a.GetSchemeRewriteSpecifier().(type) {
	case *route.RedirectAction_HttpsRedirect:
		if s.HttpsRedirect {
			rd.scheme = "https"
		}
	case *route.RedirectAction_SchemeRedirect:
		rd.scheme = strings.ToLower(s.SchemeRedirect)
	}
	if p := a.GetPortRedirect(); p != 0 {
		if p > 65535 {
			return nil, fmt.Errorf("port_redirect: %d out of range", p)
		}
		rd.port = ":" + strconv.FormatUint(uint64(p), 10)
	}
	switch p := a.GetPathRewriteSpecifier().(type) {
	case *route.RedirectAction_PathRedirect:
		rd.path = p.PathRedirect
		rd.pathHasQuery = strings.Contains(p.PathRedirect, "?")
	case *route.RedirectAction_PrefixRewrite:
		rd.prefix, rd.hasPrefix = p.PrefixRewrite, true
	case *route.RedirectAction_RegexRewrite:
		return nil, fmt.Errorf("regex_rewrite: unsupported")
	}
	return rd, nil
}

// location builds the Location of a redirect as Envoy's Utility::newUri
// does: scheme, host and port each replaced when configured; an explicit
// port replaces the request's, and a scheme change drops the old scheme's
// default port.
func (rd *redirect) location(r *http.Request, re *Entry) string {
	reqScheme := "http"
	if r.TLS != nil {
		reqScheme = "https"
	}
	scheme := rd.scheme
	if scheme == "" {
		scheme = reqScheme
	}
	host := rd.host
	if host == "" {
		host = r.Host
		if h, p, err := net.SplitHostPort(host); err == nil {
			remove := rd.port != ""
			if scheme != reqScheme {
				remove = remove || (reqScheme == "https" && p == "443") || (reqScheme == "http" && p == "80")
			}
			if remove {
				host = h
				if strings.Contains(h, ":") {
					host = "[" + h + "]"
				}
			}
		}
	}
	path := urlpath.Escaped(r.URL)
	query := r.URL.RawQuery
	switch {
	case rd.path != "":
		if rd.pathHasQuery {
			path, query = rd.path, ""
		} else {
			path = rd.path
		}
	case rd.hasPrefix:
		if k := re.path.kind; (k == pathPrefix || k == pathSeparatedPrefix) && len(re.path.value) <= len(path) {
			path = rd.prefix + path[len(re.path.value):]
		} else {
			path = rd.prefix
		}
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	if rd.stripQuery && !rd.pathHasQuery {
		query = ""
	}
	if query != "" {
		path += "?" + query
	}
	return scheme + "://" + host + rd.port + path
}

// IsRedirect reports whether the route's action is a redirect.
func (re *Entry) IsRedirect() bool { return re.redirect != nil }

// RedirectTo is the answer of a redirect route to r: the status code and
// the Location. Only for routes where IsRedirect.
func (re *Entry) RedirectTo(r *http.Request) (code int, location string) {
	return re.redirect.code, re.redirect.location(r, re)
}
