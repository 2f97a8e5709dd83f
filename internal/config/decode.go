package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	"sigs.k8s.io/yaml"
)

// apiGroup is the only API group Weft loads; versions lists the versions of
// it that share the istio.io/api networking types (v1 and v1beta1 are
// aliases of v1alpha3 there).
const apiGroup = "networking.istio.io"

var apiVersions = map[string]bool{"v1": true, "v1beta1": true, "v1alpha3": true}

// newSpec returns an empty spec message for a kind Weft loads, or nil.
func newSpec(k Kind) proto.Message {
	switch k {
	case KindVirtualService:
		return &networking.VirtualService{}
	case KindDestinationRule:
		return &networking.DestinationRule{}
	case KindServiceEntry:
		return &networking.ServiceEntry{}
	case KindWorkloadEntry:
		return &networking.WorkloadEntry{}
	}
	return nil
}

// document is one decoded YAML document. meta.Name is empty when the
// document did not get far enough to identify its resource; spec is nil
// when it has errors.
type document struct {
	meta  Meta
	spec  proto.Message
	diags []Diagnostic
}

// resource renders the Diagnostic.Resource of d, or "" when d has no name.
func (d *document) resource() string {
	if d.meta.Name == "" || d.meta.Kind == "" {
		return ""
	}
	return d.meta.String()
}

// errf records an error at path.
func (d *document) errf(path, format string, args ...any) {
	d.diags = append(d.diags, Diagnostic{
		Severity: SeverityError, File: d.meta.File, Doc: d.meta.Doc,
		Resource: d.resource(), Path: path, Message: fmt.Sprintf(format, args...),
	})
}

// errFileSyntax marks a file that is not valid YAML; the whole file is
// rejected and the resources previously loaded from it stay in force.
var errFileSyntax = errors.New("invalid YAML")

// decodeFile splits a file into documents and decodes each one. It returns
// a non-nil error diagnostic (Doc is the first bad document) when the file
// is not valid YAML; docs is then nil. Empty documents are skipped.
func decodeFile(file string, data []byte) (docs []*document, fileDiag *Diagnostic) {
	for i, raw := range splitDocuments(data) {
		n := i + 1
		js, err := yaml.YAMLToJSON(raw)
		if err != nil {
			return nil, &Diagnostic{
				Severity: SeverityError, File: file, Doc: n,
				Message: fmt.Sprintf("%v: %v; the file is ignored and its last good resources stay in force", errFileSyntax, err),
			}
		}
		js = bytes.TrimSpace(js)
		if len(js) == 0 || string(js) == "null" {
			continue
		}
		docs = append(docs, decodeDocument(file, n, js))
	}
	return docs, nil
}

// separator matches a YAML document separator line: "---", optionally
// followed by a comment.
var separator = regexp.MustCompile(`^---\s*(#.*)?$`)

// splitDocuments splits a multi-document YAML stream on "---" lines. A
// leading empty segment (a file that starts with "---") is not a document.
func splitDocuments(data []byte) [][]byte {
	var (
		docs [][]byte
		cur  []byte
	)
	lines := bytes.SplitAfter(data, []byte("\n"))
	for _, line := range lines {
		if separator.Match(bytes.TrimRight(line, "\r\n")) {
			docs = append(docs, cur)
			cur = nil
			continue
		}
		if bytes.Equal(bytes.TrimRight(line, "\r\n"), []byte("...")) {
			continue // document end marker
		}
		cur = append(cur, line...)
	}
	docs = append(docs, cur)
	if len(docs) > 1 && len(bytes.TrimSpace(stripComments(docs[0]))) == 0 {
		docs = docs[1:]
	}
	return docs
}

func stripComments(b []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(b, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
		}
	}
	return out
}

// dns1123 is a Kubernetes object name (DNS-1123 subdomain).
var dns1123 = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// decodeDocument decodes one non-empty document given as JSON.
func decodeDocument(file string, n int, js []byte) *document {
	d := &document{meta: Meta{File: file, Doc: n, Namespace: "default"}}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(js, &top); err != nil {
		d.errf("", "document is not a mapping")
		return d
	}
	var kind, apiVersion string
	if !decodeString(d, top, "kind", &kind) || !decodeString(d, top, "apiVersion", &apiVersion) {
		return d
	}
	d.meta.APIVersion = apiVersion
	var meta struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	}
	if raw, ok := top["metadata"]; ok {
		if err := json.Unmarshal(raw, &meta); err != nil {
			d.errf("metadata", "metadata must be a mapping with string name and namespace")
			return d
		}
	}
	if meta.Namespace != "" {
		d.meta.Namespace = meta.Namespace
	}
	spec := newSpec(Kind(kind))
	switch {
	case kind == "":
		d.errf("kind", "kind is required")
		return d
	case spec == nil:
		d.errf("kind", "unsupported kind %q (Weft loads VirtualService, DestinationRule, ServiceEntry, WorkloadEntry)", kind)
		return d
	}
	d.meta.Kind = Kind(kind)
	// Name the resource before any further check, so a document rejected
	// from here on keeps its last good version in force.
	d.meta.Name = meta.Name
	switch {
	case meta.Name == "":
		d.errf("metadata.name", "name is required")
		return d
	case !dns1123.MatchString(meta.Name) || len(meta.Name) > 253:
		d.errf("metadata.name", "invalid name %q: must be a lowercase DNS-1123 subdomain", meta.Name)
		return d
	case !dns1123.MatchString(d.meta.Namespace) || strings.Contains(d.meta.Namespace, ".") || len(d.meta.Namespace) > 63:
		d.errf("metadata.namespace", "invalid namespace %q: must be a lowercase DNS-1123 label", d.meta.Namespace)
		return d
	}
	group, version, _ := strings.Cut(apiVersion, "/")
	if group != apiGroup || !apiVersions[version] {
		d.errf("apiVersion", "unsupported apiVersion %q for %s (want %s/v1, v1beta1 or v1alpha3)", apiVersion, kind, apiGroup)
		return d
	}

	rawSpec, ok := top["spec"]
	if !ok || string(rawSpec) == "null" {
		rawSpec = []byte("{}")
	}
	if err := unmarshalSpec(rawSpec, spec); err != nil {
		var fe *fieldError
		if errors.As(err, &fe) {
			d.errf(fe.path, "%s", fe.msg)
		} else {
			d.errf("spec", "%v", err)
		}
		return d
	}
	d.spec = spec
	return d
}

// decodeString reads an optional top-level string field.
func decodeString(d *document, top map[string]json.RawMessage, key string, out *string) bool {
	raw, ok := top[key]
	if !ok {
		return true
	}
	if err := json.Unmarshal(raw, out); err != nil {
		d.errf(key, "%s must be a string", key)
		return false
	}
	return true
}

// fieldError is a spec decoding error located at a field path.
type fieldError struct {
	path, msg string
}

func (e *fieldError) Error() string { return e.path + ": " + e.msg }

// unmarshalSpec decodes a spec strictly. Unknown fields are reported with
// their path (protojson itself names the field but not where it is).
func unmarshalSpec(raw []byte, spec proto.Message) error {
	var tree any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&tree); err != nil {
		return fmt.Errorf("decode spec: %w", err)
	}
	if _, ok := tree.(map[string]any); !ok {
		return &fieldError{path: "spec", msg: "spec must be a mapping"}
	}
	if path, name, ok := firstUnknownField(spec.ProtoReflect().Descriptor(), tree, "spec"); ok {
		return &fieldError{path: path, msg: fmt.Sprintf("unknown field %q", name)}
	}
	normalizeDurations(spec.ProtoReflect().Descriptor(), tree)
	norm, err := json.Marshal(tree)
	if err != nil {
		return fmt.Errorf("encode spec: %w", err)
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(norm, spec); err != nil {
		return fmt.Errorf("invalid spec: %w", err)
	}
	return nil
}
