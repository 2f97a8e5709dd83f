package dataplane

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
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
func (rd *redirect) location(r *http.Request, re *routeEntry) string {
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
	path := r.URL.EscapedPath()
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

// routeReply answers a request whose route is a redirect or a direct
// response, with the route's response headers and the HTTP filters'
// (CORS) applied.
func routeReply(w http.ResponseWriter, r *http.Request, re *routeEntry, q *request) {
	h := w.Header()
	re.applyResponseHeaders(h, "")
	q.reply.encode(h) // the filters' response headers
	if re.redirect != nil {
		h["Location"] = []string{re.redirect.location(r, re)}
		q.code = re.redirect.code
		w.WriteHeader(re.redirect.code)
		return
	}
	q.reply.decorated = true // localReply must not decorate twice
	localReply(w, q, re.direct.status, re.direct.body, "")
}
