package config

import (
	"fmt"
	"sort"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// firstUnknownField walks a decoded JSON value against the message
// descriptor it will be unmarshalled into and returns the path and name of
// the first field (in sorted key order, depth first) the message does not
// have. Keys may use the JSON or the proto name, as protojson accepts both.
// Type mismatches are left for protojson to report.
func firstUnknownField(md protoreflect.MessageDescriptor, v any, path string) (fieldPath, name string, found bool) {
	if opaqueJSON(md) {
		return "", "", false
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return "", "", false
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fields := md.Fields()
	for _, k := range keys {
		fd := fields.ByJSONName(k)
		if fd == nil {
			fd = fields.ByTextName(k)
		}
		if fd == nil {
			return path + "." + k, k, true
		}
		child := path + "." + k
		val := obj[k]
		switch {
		case fd.IsMap():
			vd := fd.MapValue()
			m, ok := val.(map[string]any)
			if !ok || vd.Message() == nil {
				continue
			}
			mk := make([]string, 0, len(m))
			for key := range m {
				mk = append(mk, key)
			}
			sort.Strings(mk)
			for _, key := range mk {
				if p, n, ok := firstUnknownField(vd.Message(), m[key], child+"."+key); ok {
					return p, n, true
				}
			}
		case fd.IsList():
			list, ok := val.([]any)
			if !ok || fd.Message() == nil {
				continue
			}
			for i, elem := range list {
				if p, n, ok := firstUnknownField(fd.Message(), elem, fmt.Sprintf("%s[%d]", child, i)); ok {
					return p, n, true
				}
			}
		case fd.Message() != nil:
			if p, n, ok := firstUnknownField(fd.Message(), val, child); ok {
				return p, n, true
			}
		}
	}
	return "", "", false
}

// opaqueJSON reports whether md is a well-known type whose JSON form is not
// an object of its fields (Duration is a string, wrappers are scalars,
// Struct and Value hold arbitrary JSON, Any carries "@type").
func opaqueJSON(md protoreflect.MessageDescriptor) bool {
	if md.ParentFile() == nil {
		return false
	}
	return md.ParentFile().Package() == "google.protobuf"
}

// normalizeDurations rewrites, in place, every google.protobuf.Duration
// value of a decoded JSON tree that is written Go-style ("500ms", "15m",
// "1h30m", as Istio's documentation and CRD schemas accept) into the
// "<seconds>s" form protojson requires. Values it cannot parse are left for
// protojson to report.
func normalizeDurations(md protoreflect.MessageDescriptor, v any) {
	obj, ok := v.(map[string]any)
	if !ok || opaqueJSON(md) {
		return
	}
	fields := md.Fields()
	for k, val := range obj {
		fd := fields.ByJSONName(k)
		if fd == nil {
			fd = fields.ByTextName(k)
		}
		if fd == nil {
			continue
		}
		var msg protoreflect.MessageDescriptor
		if fd.IsMap() {
			msg = fd.MapValue().Message()
		} else {
			msg = fd.Message()
		}
		if msg == nil {
			continue
		}
		isDuration := msg.FullName() == "google.protobuf.Duration"
		fix := func(x any) any {
			if s, ok := x.(string); ok && isDuration {
				return protoDuration(s)
			}
			normalizeDurations(msg, x)
			return x
		}
		switch {
		case fd.IsMap():
			if m, ok := val.(map[string]any); ok {
				for mk, mv := range m {
					m[mk] = fix(mv)
				}
			}
		case fd.IsList():
			if l, ok := val.([]any); ok {
				for i := range l {
					l[i] = fix(l[i])
				}
			}
		default:
			obj[k] = fix(val)
		}
	}
}

// protoDuration converts a Go duration string to protojson's form; other
// strings are returned unchanged.
func protoDuration(s string) string {
	d, err := time.ParseDuration(s)
	if err != nil {
		return s
	}
	sign := ""
	if d < 0 {
		sign, d = "-", -d
	}
	secs, nanos := d/time.Second, d%time.Second
	if nanos == 0 {
		return fmt.Sprintf("%s%ds", sign, secs)
	}
	return fmt.Sprintf("%s%d.%09ds", sign, secs, nanos)
}
