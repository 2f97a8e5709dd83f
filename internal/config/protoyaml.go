package config

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
)

// maxNodes bounds how many YAML nodes one document may expand to, aliases
// included, so a small file of nested aliases cannot take the control
// plane's memory ("billion laughs").
const maxNodes = 1 << 20

// fieldError is one problem found while decoding a document, at a field path.
type fieldError struct {
	path, msg string
}

// yamlDecoder decodes YAML nodes into protobuf messages the way Kubernetes'
// structural schema validation and protojson together would judge them,
// but reports every problem of a document, each at its field path and
// YAML position, instead of stopping at the first. It accepts a field's
// JSON name (as Istio's CRDs spell it) and its proto name (as protojson
// does), Go-style durations ("500ms", "1h30m"), and YAML 1.1 booleans
// ("yes", "on") for bool fields, as kubectl's YAML parser does.
type yamlDecoder struct {
	lineOffset int // added to node lines: the document's first line in its file, minus 1
	pos        Positions
	errs       []fieldError
	nodes      int
}

func (d *yamlDecoder) errf(path, format string, args ...any) {
	d.errs = append(d.errs, fieldError{path: path, msg: fmt.Sprintf(format, args...)})
}

// at records where path's value is written.
func (d *yamlDecoder) at(path string, n *yaml.Node) {
	d.pos.set(path, Position{Line: n.Line + d.lineOffset, Column: n.Column})
}

// resolve follows aliases and counts nodes; it returns nil when the
// document has grown past maxNodes (reported once).
func (d *yamlDecoder) resolve(n *yaml.Node, path string) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	d.nodes++
	if d.nodes == maxNodes {
		d.errf(path, "the document expands to more than %d YAML nodes (through aliases?); it is not loaded", maxNodes)
	}
	if d.nodes >= maxNodes {
		return nil
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names what a node is, for "want X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return fmt.Sprintf("the string %q", n.Value)
		case "!!int", "!!float":
			return "the number " + n.Value
		case "!!bool":
			return "the boolean " + n.Value
		case "!!null":
			return "null"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

// pair is one key/value of a mapping node.
type pair struct{ key, value *yaml.Node }

// pairs lists a mapping's entries with YAML merge keys ("<<: *base")
// expanded: explicit keys win over merged ones, as in YAML 1.1. Duplicate
// explicit keys are reported.
func (d *yamlDecoder) pairs(n *yaml.Node, path string) []pair {
	var explicit, merged []pair
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge" {
			v = d.resolve(v, path)
			if v == nil {
				return nil
			}
			var sources []*yaml.Node
			switch v.Kind {
			case yaml.MappingNode:
				sources = []*yaml.Node{v}
			case yaml.SequenceNode:
				for _, s := range v.Content {
					if s = d.resolve(s, path); s == nil {
						return nil
					}
					sources = append(sources, s)
				}
			}
			for _, s := range sources {
				if s.Kind != yaml.MappingNode {
					d.errf(path, "a merge key (<<) must refer to a mapping")
					continue
				}
				merged = append(merged, d.pairs(s, path)...)
			}
			continue
		}
		if k.Kind == yaml.ScalarNode {
			if line, dup := seen[k.Value]; dup {
				d.errf(joinPath(path, k.Value), "field %q is written twice (also on line %d)", k.Value, line)
				continue
			}
			seen[k.Value] = k.Line + d.lineOffset
		}
		explicit = append(explicit, pair{k, v})
	}
	for _, p := range merged {
		if _, ok := seen[p.key.Value]; !ok {
			seen[p.key.Value] = 0
			explicit = append(explicit, p)
		}
	}
	return explicit
}

// joinPath appends a field name to a path.
func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// message decodes mapping n into m, which must be empty.
func (d *yamlDecoder) message(n *yaml.Node, path string, m protoreflect.Message) {
	if n = d.resolve(n, path); n == nil || isNull(n) {
		return
	}
	d.at(path, n)
	md := m.Descriptor()
	if wellKnown(md) {
		d.wellKnown(n, path, m)
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errf(path, "want a mapping of fields, got %s", describe(n))
		return
	}
	fields := md.Fields()
	oneofs := map[protoreflect.OneofDescriptor]string{} // oneof -> JSON name of the member set
	for _, p := range d.pairs(n, path) {
		if p.key.Kind != yaml.ScalarNode {
			d.errf(path, "field names must be strings, got %s", describe(p.key))
			continue
		}
		name := p.key.Value
		fd := fields.ByJSONName(name)
		if fd == nil {
			fd = fields.ByTextName(name)
		}
		if fd == nil && reservedField(md, name) {
			// A field the API removed (websocketUpgrade, which Istio's
			// samples/websockets still sets): Kubernetes prunes it from
			// Istio's resources, and Istio's meaning is now the default.
			continue
		}
		if fd == nil {
			child := joinPath(path, name)
			d.at(child, p.key)
			d.errf(child, "unknown field %q%s", name, suggest(name, md))
			continue
		}
		child := joinPath(path, fd.JSONName())
		v := d.resolve(p.value, child)
		if v == nil {
			return
		}
		if isNull(v) {
			continue // null leaves a field unset, as in protojson
		}
		d.at(child, v)
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			if other, set := oneofs[od]; set {
				d.errf(child, "%s and %s are mutually exclusive: set only one of %s", other, fd.JSONName(), oneofNames(od))
				continue
			}
			oneofs[od] = fd.JSONName()
		}
		d.field(v, child, m, fd)
	}
}

// field decodes the value of one field into m.
func (d *yamlDecoder) field(n *yaml.Node, path string, m protoreflect.Message, fd protoreflect.FieldDescriptor) {
	switch {
	case fd.IsList():
		if n.Kind != yaml.SequenceNode {
			d.errf(path, "want a list, got %s", describe(n))
			return
		}
		list := m.Mutable(fd).List()
		for i, e := range n.Content {
			ep := fmt.Sprintf("%s[%d]", path, i)
			if e = d.resolve(e, ep); e == nil {
				return
			}
			d.at(ep, e)
			if fd.Message() != nil {
				el := list.NewElement()
				d.message(e, ep, el.Message())
				list.Append(el)
				continue
			}
			if isNull(e) {
				d.errf(ep, "list elements must not be null")
				continue
			}
			if v, ok := d.scalar(e, ep, fd); ok {
				list.Append(v)
			}
		}
	case fd.IsMap():
		if n.Kind != yaml.MappingNode {
			d.errf(path, "want a mapping, got %s", describe(n))
			return
		}
		mp := m.Mutable(fd).Map()
		kd, vd := fd.MapKey(), fd.MapValue()
		for _, p := range d.pairs(n, path) {
			if p.key.Kind != yaml.ScalarNode {
				d.errf(path, "map keys must be scalars, got %s", describe(p.key))
				continue
			}
			ep := joinPath(path, p.key.Value)
			v := d.resolve(p.value, ep)
			if v == nil {
				return
			}
			d.at(ep, v)
			key, ok := mapKey(p.key.Value, kd)
			if !ok {
				d.errf(ep, "invalid map key %q: want %s", p.key.Value, kindName(kd))
				continue
			}
			if vd.Message() != nil {
				val := mp.NewValue()
				d.message(v, ep, val.Message())
				mp.Set(key, val)
				continue
			}
			if isNull(v) {
				d.errf(ep, "want %s, got null", kindName(vd))
				continue
			}
			if val, ok := d.scalar(v, ep, vd); ok {
				mp.Set(key, val)
			}
		}
	case fd.Message() != nil:
		d.message(n, path, m.Mutable(fd).Message())
	default:
		if v, ok := d.scalar(n, path, fd); ok {
			m.Set(fd, v)
		}
	}
}

func mapKey(s string, kd protoreflect.FieldDescriptor) (protoreflect.MapKey, bool) {
	switch kd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(s).MapKey(), true
	case protoreflect.BoolKind:
		b, err := strconv.ParseBool(s)
		return protoreflect.ValueOfBool(b).MapKey(), err == nil
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		i, err := strconv.ParseInt(s, 10, 32)
		return protoreflect.ValueOfInt32(int32(i)).MapKey(), err == nil
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		i, err := strconv.ParseInt(s, 10, 64)
		return protoreflect.ValueOfInt64(i).MapKey(), err == nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		i, err := strconv.ParseUint(s, 10, 32)
		return protoreflect.ValueOfUint32(uint32(i)).MapKey(), err == nil
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		i, err := strconv.ParseUint(s, 10, 64)
		return protoreflect.ValueOfUint64(i).MapKey(), err == nil
	}
	return protoreflect.MapKey{}, false
}

// yaml11Bools are the YAML 1.1 spellings kubectl reads as booleans.
var yaml11Bools = map[string]bool{
	"y": true, "yes": true, "on": true, "true": true,
	"n": false, "no": false, "off": false, "false": false,
}

// scalar decodes a scalar node for a non-message field.
func (d *yamlDecoder) scalar(n *yaml.Node, path string, fd protoreflect.FieldDescriptor) (protoreflect.Value, bool) {
	want := kindName(fd)
	if n.Kind != yaml.ScalarNode {
		d.errf(path, "want %s, got %s", want, describe(n))
		return protoreflect.Value{}, false
	}
	tag := n.ShortTag()
	switch fd.Kind() {
	case protoreflect.StringKind:
		if tag == "!!str" || tag == "!!timestamp" {
			return protoreflect.ValueOfString(n.Value), true
		}
		d.errf(path, "want a string, got %s; quote it if it is meant as text: %q", describe(n), n.Value)
	case protoreflect.BoolKind:
		if b, ok := yaml11Bools[strings.ToLower(n.Value)]; ok && (tag == "!!bool" || tag == "!!str") {
			return protoreflect.ValueOfBool(b), true
		}
		d.errf(path, "want true or false, got %s", describe(n))
	case protoreflect.EnumKind:
		ed := fd.Enum()
		if tag == "!!int" {
			if i, err := strconv.ParseInt(n.Value, 0, 32); err == nil && ed.Values().ByNumber(protoreflect.EnumNumber(i)) != nil {
				return protoreflect.ValueOfEnum(protoreflect.EnumNumber(i)), true
			}
		}
		if ev := ed.Values().ByName(protoreflect.Name(n.Value)); ev != nil && tag == "!!str" {
			return protoreflect.ValueOfEnum(ev.Number()), true
		}
		hint := ""
		if ev := ed.Values().ByName(protoreflect.Name(strings.ToUpper(n.Value))); ev != nil && tag == "!!str" {
			hint = fmt.Sprintf(" (values are upper case: %s)", ev.Name())
		}
		d.errf(path, "invalid value %s; want one of %s%s", describe(n), enumNames(ed), hint)
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		if tag == "!!int" || tag == "!!float" {
			var f float64
			if err := n.Decode(&f); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
				if fd.Kind() == protoreflect.FloatKind {
					return protoreflect.ValueOfFloat32(float32(f)), true
				}
				return protoreflect.ValueOfFloat64(f), true
			}
		}
		d.errf(path, "want a number, got %s", describe(n))
	case protoreflect.BytesKind:
		if tag == "!!str" || tag == "!!binary" {
			if b, err := base64.StdEncoding.DecodeString(n.Value); err == nil {
				return protoreflect.ValueOfBytes(b), true
			}
		}
		d.errf(path, "want base64-encoded bytes, got %s", describe(n))
	default: // integers
		if tag != "!!int" {
			d.errf(path, "want %s, got %s", want, describe(n))
			return protoreflect.Value{}, false
		}
		return d.integer(n, path, fd)
	}
	return protoreflect.Value{}, false
}

// integer decodes an !!int scalar, checking the field's range.
func (d *yamlDecoder) integer(n *yaml.Node, path string, fd protoreflect.FieldDescriptor) (protoreflect.Value, bool) {
	var i int64
	var u uint64
	signedErr := n.Decode(&i)
	unsignedErr := n.Decode(&u)
	out := func(lo, hi string) (protoreflect.Value, bool) {
		d.errf(path, "%s is out of range %s to %s", n.Value, lo, hi)
		return protoreflect.Value{}, false
	}
	switch fd.Kind() {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		if signedErr != nil || i < math.MinInt32 || i > math.MaxInt32 {
			return out("-2147483648", "2147483647")
		}
		return protoreflect.ValueOfInt32(int32(i)), true
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		if signedErr != nil {
			return out("-9223372036854775808", "9223372036854775807")
		}
		return protoreflect.ValueOfInt64(i), true
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		if unsignedErr != nil || u > math.MaxUint32 {
			return out("0", "4294967295")
		}
		return protoreflect.ValueOfUint32(uint32(u)), true
	default: // uint64
		if unsignedErr != nil {
			return out("0", "18446744073709551615")
		}
		return protoreflect.ValueOfUint64(u), true
	}
}

// wellKnown reports whether md is a google.protobuf well-known type, whose
// YAML form is not a mapping of its fields.
func wellKnown(md protoreflect.MessageDescriptor) bool {
	return md.ParentFile() != nil && md.ParentFile().Package() == "google.protobuf"
}

// wellKnown decodes a well-known type: Duration from a duration string,
// wrappers from their scalar, anything else (Struct, Value, Any, ...)
// through its protojson form.
func (d *yamlDecoder) wellKnown(n *yaml.Node, path string, m protoreflect.Message) {
	md := m.Descriptor()
	switch name := md.FullName(); {
	case name == "google.protobuf.Duration":
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
			d.errf(path, "want a duration such as 500ms, 10s or 1m30s, got %s", describe(n))
			return
		}
		dur, err := time.ParseDuration(n.Value)
		if err != nil {
			d.errf(path, "invalid duration %q: want a number with a unit, such as 500ms, 10s or 1m30s", n.Value)
			return
		}
		proto.Merge(m.Interface(), durationpb.New(dur))
	case strings.HasSuffix(string(name), "Value") && md.Fields().Len() == 1 && md.Fields().Get(0).Name() == "value":
		fd := md.Fields().Get(0)
		if v, ok := d.scalar(n, path, fd); ok {
			m.Set(fd, v)
		}
	default:
		var tree any
		if err := n.Decode(&tree); err != nil {
			d.errf(path, "%v", err)
			return
		}
		js, err := json.Marshal(jsonCompatible(tree))
		if err != nil {
			d.errf(path, "cannot be represented as JSON: %v", err)
			return
		}
		if err := protojson.Unmarshal(js, m.Interface()); err != nil {
			d.errf(path, "invalid %s: %v", name, err)
		}
	}
}

// jsonCompatible converts what yaml.v3 decodes into values encoding/json
// can marshal (map keys must be strings).
func jsonCompatible(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			t[k] = jsonCompatible(e)
		}
		return t
	case map[any]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[fmt.Sprint(k)] = jsonCompatible(e)
		}
		return out
	case []any:
		for i, e := range t {
			t[i] = jsonCompatible(e)
		}
		return t
	case time.Time:
		return t.Format(time.RFC3339Nano)
	}
	return v
}

// kindName says what a field of this kind is written as.
func kindName(fd protoreflect.FieldDescriptor) string {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return "a string"
	case protoreflect.BoolKind:
		return "true or false"
	case protoreflect.EnumKind:
		return "one of " + enumNames(fd.Enum())
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return "a number"
	case protoreflect.BytesKind:
		return "base64-encoded bytes"
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return "a non-negative integer"
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return "a mapping of fields"
	}
	return "an integer"
}

func enumNames(ed protoreflect.EnumDescriptor) string {
	vals := ed.Values()
	names := make([]string, 0, vals.Len())
	for i := range vals.Len() {
		names = append(names, string(vals.Get(i).Name()))
	}
	return strings.Join(names, ", ")
}

func oneofNames(od protoreflect.OneofDescriptor) string {
	fs := od.Fields()
	names := make([]string, 0, fs.Len())
	for i := range fs.Len() {
		names = append(names, fs.Get(i).JSONName())
	}
	return strings.Join(names, ", ")
}

// reservedField reports whether name, a JSON (lowerCamelCase) or proto
// field name, is one md reserves: a field its API removed.
func reservedField(md protoreflect.MessageDescriptor, name string) bool {
	rn := md.ReservedNames()
	if rn.Len() == 0 {
		return false
	}
	var b strings.Builder
	for _, r := range name {
		if r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return rn.Has(protoreflect.Name(name)) || rn.Has(protoreflect.Name(b.String()))
}

// suggest returns "; did you mean X?" when a field of md is a likely
// intended spelling of name, else "".
func suggest(name string, md protoreflect.MessageDescriptor) string {
	fields := md.Fields()
	names := make([]string, 0, fields.Len())
	for i := range fields.Len() {
		names = append(names, fields.Get(i).JSONName())
	}
	slices.Sort(names)
	return suggestOf(name, names)
}

// editDistance is the Levenshtein distance of two short strings.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
