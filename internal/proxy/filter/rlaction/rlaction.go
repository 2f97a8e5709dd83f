// Package rlaction compiles Envoy's rate limit actions (a route's
// config.route.v3.RateLimit) and runs them on a request, yielding the
// request's rate limit descriptor as Envoy builds it. The local
// (envoy.filters.http.local_ratelimit) and the global
// (envoy.filters.http.ratelimit) rate limit filters share it.
package rlaction

import (
	"cmp"
	"fmt"
	"net/http"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"weft.dev/weft/internal/proxy/filter"
	"weft.dev/weft/internal/proxy/matcher"
)

// Entry is one entry of a descriptor.
type Entry struct{ Key, Value string }

// Action is one compiled rate limit action: the descriptor entry it
// yields for a request, if any. Immutable.
type Action struct {
	kind         kind
	key, value   string
	header       string // request_headers: canonical name
	skipIfAbsent bool
	headers      []matcher.Header // header_value_match
	expectMatch  bool
}

type kind uint8

const (
	requestHeader kind = iota
	remoteAddress
	genericKey
	headerValueMatch
)

// CompileAll compiles a list of rate_limits entries; errors name the
// entry and the field ("rate_limits[i].actions[j]…").
func CompileAll(rls []*routev3.RateLimit) ([][]Action, error) {
	var out [][]Action
	for i, rl := range rls {
		acts, err := Compile(rl)
		if err != nil {
			return nil, fmt.Errorf("rate_limits[%d].%w", i, err)
		}
		out = append(out, acts)
	}
	return out, nil
}

// Compile compiles one rate_limits entry: request_headers,
// remote_address, generic_key and header_value_match actions. Errors
// name the field inside rl.
func Compile(rl *routev3.RateLimit) ([]Action, error) {
	if rl.GetStage().GetValue() != 0 || rl.GetDisableKey() != "" || rl.GetLimit() != nil || rl.GetApplyOnStreamDone() {
		return nil, fmt.Errorf("stage, disable_key, limit and apply_on_stream_done: unsupported")
	}
	if len(rl.GetActions()) == 0 {
		return nil, fmt.Errorf("actions: at least one action is required")
	}
	var out []Action
	for j, a := range rl.GetActions() {
		switch sp := a.GetActionSpecifier().(type) {
		case *routev3.RateLimit_Action_RequestHeaders_:
			h := sp.RequestHeaders
			if h.GetHeaderName() == "" || h.GetDescriptorKey() == "" {
				return nil, fmt.Errorf("actions[%d].request_headers: header_name and descriptor_key are required", j)
			}
			out = append(out, Action{kind: requestHeader, key: h.GetDescriptorKey(),
				header: http.CanonicalHeaderKey(h.GetHeaderName()), skipIfAbsent: h.GetSkipIfAbsent()})
		case *routev3.RateLimit_Action_RemoteAddress_:
			out = append(out, Action{kind: remoteAddress, key: "remote_address"})
		case *routev3.RateLimit_Action_GenericKey_:
			g := sp.GenericKey
			if g.GetDescriptorValue() == "" {
				return nil, fmt.Errorf("actions[%d].generic_key.descriptor_value: required", j)
			}
			out = append(out, Action{kind: genericKey, key: cmp.Or(g.GetDescriptorKey(), "generic_key"), value: g.GetDescriptorValue()})
		case *routev3.RateLimit_Action_HeaderValueMatch_:
			m := sp.HeaderValueMatch
			if m.GetDescriptorValue() == "" {
				return nil, fmt.Errorf("actions[%d].header_value_match.descriptor_value: required", j)
			}
			act := Action{kind: headerValueMatch, key: cmp.Or(m.GetDescriptorKey(), "header_match"), value: m.GetDescriptorValue(),
				expectMatch: m.GetExpectMatch() == nil || m.GetExpectMatch().GetValue()}
			for k, hm := range m.GetHeaders() {
				ch, err := matcher.CompileHeader(hm)
				if err != nil {
					return nil, fmt.Errorf("actions[%d].header_value_match.headers[%d]: %w", j, k, err)
				}
				act.headers = append(act.headers, ch)
			}
			out = append(out, act)
		default:
			return nil, fmt.Errorf("actions[%d]: %T unsupported (request_headers, remote_address, generic_key and header_value_match are)", j, sp)
		}
	}
	return out, nil
}

// Descriptor runs one rate_limits entry's actions on the request and
// appends the entries to out, as Envoy: false when an action yields
// nothing (a header absent without skip_if_absent, a header match that
// does not come out as expected, no client address), or no action yields
// anything — the entry then sends no descriptor.
func Descriptor(s *filter.Stream, acts []Action, out []Entry) ([]Entry, bool) {
	n := len(out)
	for _, a := range acts {
		switch a.kind {
		case requestHeader:
			v := s.Request.Header[a.header]
			if len(v) == 0 {
				if a.skipIfAbsent {
					continue
				}
				return out[:n], false
			}
			out = append(out, Entry{a.key, v[0]})
		case remoteAddress:
			ip := s.RemoteIP
			if !ip.IsValid() && s.Connection != nil {
				ip = s.Connection.RemoteAddr.Addr()
			}
			if !ip.IsValid() {
				return out[:n], false
			}
			out = append(out, Entry{a.key, ip.Unmap().String()})
		case genericKey:
			out = append(out, Entry{a.key, a.value})
		case headerValueMatch:
			matched := true
			for i := range a.headers {
				if !a.headers[i].Match(s.Request) {
					matched = false
					break
				}
			}
			if matched != a.expectMatch {
				return out[:n], false
			}
			out = append(out, Entry{a.key, a.value})
		}
	}
	return out, len(out) > n
}
