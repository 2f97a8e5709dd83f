package accesslog

import (
	"fmt"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"

	"weft.dev/weft/internal/proxy/matcher"
)

// Filter is a compiled AccessLogFilter: whether a finished request is
// logged. Immutable.
type Filter struct {
	kind     filterKind
	cmp      accesslogv3.ComparisonFilter_Op
	value    int64 // status code, or milliseconds
	children []*Filter
	header   matcher.Header
	flags    []string // response_flag_filter: any of these (none = any flag)
}

type filterKind uint8

const (
	fStatus filterKind = iota + 1
	fDuration
	fAnd
	fOr
	fHeader
	fFlags
	fTrue // not_health_check_filter: the proxy serves no health checks
)

// supportedFilters names the filters Weft's proxy implements.
const supportedFilters = "status_code_filter, duration_filter, header_filter, response_flag_filter, not_health_check_filter, and_filter, or_filter"

// ParseFilter compiles f; nil f gives a nil Filter (log everything).
// Errors name the unsupported part.
func ParseFilter(f *accesslogv3.AccessLogFilter) (*Filter, error) {
	if f == nil {
		return nil, nil
	}
	switch s := f.GetFilterSpecifier().(type) {
	case *accesslogv3.AccessLogFilter_StatusCodeFilter:
		c := s.StatusCodeFilter.GetComparison()
		return &Filter{kind: fStatus, cmp: c.GetOp(), value: int64(c.GetValue().GetDefaultValue())}, nil
	case *accesslogv3.AccessLogFilter_DurationFilter:
		c := s.DurationFilter.GetComparison()
		return &Filter{kind: fDuration, cmp: c.GetOp(), value: int64(c.GetValue().GetDefaultValue())}, nil
	case *accesslogv3.AccessLogFilter_NotHealthCheckFilter:
		return &Filter{kind: fTrue}, nil
	case *accesslogv3.AccessLogFilter_AndFilter:
		return parseChildren(fAnd, "and_filter", s.AndFilter.GetFilters())
	case *accesslogv3.AccessLogFilter_OrFilter:
		return parseChildren(fOr, "or_filter", s.OrFilter.GetFilters())
	case *accesslogv3.AccessLogFilter_HeaderFilter:
		h, err := matcher.CompileHeader(s.HeaderFilter.GetHeader())
		if err != nil {
			return nil, fmt.Errorf("header_filter.header: %w", err)
		}
		return &Filter{kind: fHeader, header: h}, nil
	case *accesslogv3.AccessLogFilter_ResponseFlagFilter:
		return &Filter{kind: fFlags, flags: s.ResponseFlagFilter.GetFlags()}, nil
	case nil:
		return nil, fmt.Errorf("filter_specifier: none set")
	default:
		return nil, fmt.Errorf("%T is not supported (Weft's proxy implements %s)", s, supportedFilters)
	}
}

func parseChildren(k filterKind, name string, fs []*accesslogv3.AccessLogFilter) (*Filter, error) {
	if len(fs) < 2 {
		return nil, fmt.Errorf("%s.filters: at least two filters are required", name)
	}
	out := &Filter{kind: k}
	for i, c := range fs {
		cf, err := ParseFilter(c)
		if err != nil {
			return nil, fmt.Errorf("%s.filters[%d].%w", name, i, err)
		}
		out.children = append(out.children, cf)
	}
	return out, nil
}

// Match reports whether e is logged. A nil Filter matches everything.
func (f *Filter) Match(e *Entry) bool {
	if f == nil {
		return true
	}
	switch f.kind {
	case fStatus:
		return compare(f.cmp, int64(e.Code), f.value)
	case fDuration:
		return compare(f.cmp, e.Duration.Milliseconds(), f.value)
	case fAnd:
		for _, c := range f.children {
			if !c.Match(e) {
				return false
			}
		}
		return true
	case fOr:
		for _, c := range f.children {
			if c.Match(e) {
				return true
			}
		}
		return false
	case fHeader:
		return e.Request != nil && f.header.Match(e.Request)
	case fFlags:
		if e.Flags == "" {
			return false
		}
		if len(f.flags) == 0 {
			return true
		}
		for _, want := range f.flags {
			for fl := range strings.SplitSeq(e.Flags, ",") {
				if fl == want {
					return true
				}
			}
		}
		return false
	case fTrue:
		return true
	}
	return false
}

func compare(op accesslogv3.ComparisonFilter_Op, v, want int64) bool {
	switch op {
	case accesslogv3.ComparisonFilter_EQ:
		return v == want
	case accesslogv3.ComparisonFilter_GE:
		return v >= want
	case accesslogv3.ComparisonFilter_LE:
		return v <= want
	case accesslogv3.ComparisonFilter_NE:
		return v != want
	}
	return false
}
