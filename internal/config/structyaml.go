package config

import (
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// goValue decodes node n into v, a settable value of a Go API type (the
// Kubernetes Gateway API's, which are not protobufs), the way the API
// server's structural schema would judge it: fields by their JSON names
// (embedded ",inline" structs flattened), unknown fields rejected, every
// problem reported at its field path and YAML position, as message does
// for protobufs. It knows the kinds those types use: structs, pointers,
// slices, maps with string keys, strings, booleans and integers.
func (d *yamlDecoder) goValue(n *yaml.Node, path string, v reflect.Value) {
	if n = d.resolve(n, path); n == nil || isNull(n) {
		return // null leaves a field unset, as the API server does
	}
	d.at(path, n)
	switch v.Kind() {
	case reflect.Pointer:
		e := reflect.New(v.Type().Elem())
		d.goValue(n, path, e.Elem())
		v.Set(e)
	case reflect.Struct:
		d.goStruct(n, path, v)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errf(path, "want a list, got %s", describe(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), 0, len(n.Content))
		for i, e := range n.Content {
			ep := fmt.Sprintf("%s[%d]", path, i)
			if e = d.resolve(e, ep); e == nil {
				return
			}
			if isNull(e) {
				d.at(ep, e)
				d.errf(ep, "list elements must not be null")
				continue
			}
			el := reflect.New(v.Type().Elem()).Elem()
			d.goValue(e, ep, el)
			s = reflect.Append(s, el)
		}
		v.Set(s)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.errf(path, "want a mapping, got %s", describe(n))
			return
		}
		m := reflect.MakeMap(v.Type())
		for _, p := range d.pairs(n, path) {
			ep := joinPath(path, p.key.Value)
			if p.key.Kind != yaml.ScalarNode {
				d.errf(path, "map keys must be strings, got %s", describe(p.key))
				continue
			}
			val := reflect.New(v.Type().Elem()).Elem()
			d.goValue(p.value, ep, val)
			m.SetMapIndex(reflect.ValueOf(p.key.Value).Convert(v.Type().Key()), val)
		}
		v.Set(m)
	case reflect.String:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
			d.errf(path, "want a string, got %s", describe(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		b, ok := yaml11Bools[strings.ToLower(n.Value)]
		if n.Kind != yaml.ScalarNode || !ok || n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
			d.errf(path, "want a boolean, got %s", describe(n))
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint16:
		i, err := strconv.ParseInt(n.Value, 10, 64)
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || err != nil {
			d.errf(path, "want an integer, got %s", describe(n))
			return
		}
		lo, hi := int64(math.MinInt32), int64(math.MaxInt32)
		switch v.Kind() {
		case reflect.Int64:
			lo, hi = math.MinInt64, math.MaxInt64
		case reflect.Uint16:
			lo, hi = 0, math.MaxUint16
		}
		if i < lo || i > hi {
			d.errf(path, "%d is out of range [%d, %d]", i, lo, hi)
			return
		}
		if v.Kind() == reflect.Uint16 {
			v.SetUint(uint64(i))
			return
		}
		v.SetInt(i)
	default:
		d.errf(path, "Weft cannot decode a %s here", v.Type())
	}
}

// goStruct decodes mapping n into struct v by the fields' JSON names.
func (d *yamlDecoder) goStruct(n *yaml.Node, path string, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.errf(path, "want a mapping of fields, got %s", describe(n))
		return
	}
	fields := jsonFields(v.Type())
	for _, p := range d.pairs(n, path) {
		if p.key.Kind != yaml.ScalarNode {
			d.errf(path, "field names must be strings, got %s", describe(p.key))
			continue
		}
		name := p.key.Value
		child := joinPath(path, name)
		idx, ok := fields[name]
		if !ok {
			d.at(child, p.key)
			d.errf(child, "unknown field %q%s", name, suggestOf(name, slices.Sorted(maps.Keys(fields))))
			continue
		}
		d.goValue(p.value, child, v.FieldByIndex(idx))
	}
}

// jsonFields maps the JSON names of t's fields to their indexes, with
// embedded ",inline" structs (and embedded structs without a tag)
// flattened, as encoding/json does.
func jsonFields(t reflect.Type) map[string][]int {
	out := map[string][]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			for k, idx := range jsonFields(f.Type) {
				out[k] = append([]int{i}, idx...)
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = []int{i}
	}
	return out
}
