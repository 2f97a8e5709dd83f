package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	telemetry "istio.io/api/telemetry/v1alpha1"

	weftnet "weft.dev/weft/api/networking/v1alpha1"
	weftsec "weft.dev/weft/api/security/v1alpha1"
)

// MaxFileSize is the largest config file Weft reads (4 MiB). Kubernetes
// stores no object over 1.5 MiB; a bigger file is almost surely a mistake,
// and reading it would cost the control plane memory for nothing. A file
// over the limit is reported and its last good resources stay in force.
const MaxFileSize = 4 << 20

// apiGroup is the API group of the networking kinds; apiVersions lists
// the versions of it that share the istio.io/api networking types (v1 and
// v1beta1 are aliases of v1alpha3 there).
const apiGroup = "networking.istio.io"

var apiVersions = map[string]bool{"v1": true, "v1beta1": true, "v1alpha3": true}

// securityGroup is the API group of the security kinds; securityVersions
// are the versions sharing the istio.io/api security types (v1 is an alias
// of v1beta1).
const securityGroup = "security.istio.io"

var securityVersions = map[string]bool{"v1": true, "v1beta1": true}

// telemetryGroup is the API group of Telemetry; telemetryVersions share
// the istio.io/api telemetry types (v1 is an alias of v1alpha1).
const telemetryGroup = "telemetry.istio.io"

var telemetryVersions = map[string]bool{"v1": true, "v1alpha1": true}

// weftNetworkingGroup is the API group of Weft's own networking kinds
// (api/networking/v1alpha1).
const weftNetworkingGroup = "networking.weft.dev"

// weftSecurityGroup is the API group of Weft's own security kinds
// (api/security/v1alpha1).
const weftSecurityGroup = "security.weft.dev"

// supportedKinds names the kinds Weft loads, for messages.
const supportedKinds = "VirtualService, DestinationRule, Gateway, ServiceEntry, WorkloadEntry, WorkloadGroup, Sidecar, PeerAuthentication, AuthorizationPolicy, RequestAuthentication, Telemetry, RateLimit, OIDCLogin; and from the Gateway API: " + gatewayAPIKinds + "; and Kubernetes Namespaces (for their labels)"

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
	case KindWorkloadGroup:
		return &networking.WorkloadGroup{}
	case KindSidecar:
		return &networking.Sidecar{}
	case KindGateway:
		return &networking.Gateway{}
	case KindPeerAuthentication:
		return &security.PeerAuthentication{}
	case KindAuthorizationPolicy:
		return &security.AuthorizationPolicy{}
	case KindRequestAuthentication:
		return &security.RequestAuthentication{}
	case KindTelemetry:
		return &telemetry.Telemetry{}
	case KindRateLimit:
		return &weftnet.RateLimit{}
	case KindOIDCLogin:
		return &weftsec.OIDCLogin{}
	}
	return nil
}

// checkAPIVersion reports whether apiVersion is one Weft reads kind k in,
// and if not, what it wants.
func checkAPIVersion(k Kind, apiVersion string) (ok bool, want string) {
	group, version, _ := strings.Cut(apiVersion, "/")
	switch k {
	case KindGatewayClass, KindKubeGateway, KindHTTPRoute, KindGRPCRoute, KindTCPRoute, KindTLSRoute, KindReferenceGrant:
		vs := GatewayAPIVersions(k)
		return group == gatewayAPIGroup && slices.Contains(vs, version),
			gatewayAPIGroup + "/" + strings.Join(vs[:len(vs)-1], ", ") + " or " + vs[len(vs)-1]
	case KindNamespace:
		return apiVersion == "v1", "v1"
	case KindPeerAuthentication, KindAuthorizationPolicy, KindRequestAuthentication:
		return group == securityGroup && securityVersions[version], securityGroup + "/v1 or v1beta1"
	case KindTelemetry:
		return group == telemetryGroup && telemetryVersions[version], telemetryGroup + "/v1 or v1alpha1"
	case KindRateLimit:
		return group == weftNetworkingGroup && version == "v1alpha1", weftNetworkingGroup + "/v1alpha1"
	case KindOIDCLogin:
		return group == weftSecurityGroup && version == "v1alpha1", weftSecurityGroup + "/v1alpha1"
	}
	return group == apiGroup && apiVersions[version], apiGroup + "/v1, v1beta1 or v1alpha3"
}

// document is one decoded YAML document. meta.Name is empty when the
// document did not get far enough to identify its resource; spec is nil
// when it could not be decoded at all (it may be partial when diags has
// decoding errors: see decodeErrors).
type document struct {
	meta        Meta
	spec        any // a protobuf, or a Gateway API spec (newGatewayAPISpec)
	annotations map[string]string
	pos         Positions
	diags       []Diagnostic
	// decodeErrors is how many of diags are errors of decoding (types,
	// unknown fields) rather than of validation.
	decodeErrors int
}

// resource renders the Diagnostic.Resource of d, or "" when d has no name.
func (d *document) resource() string {
	if d.meta.Name == "" || d.meta.Kind == "" {
		return ""
	}
	return d.meta.String()
}

// diag builds a diagnostic of this document at path, located with its
// positions.
func (d *document) diag(sev Severity, code Code, path, msg string) Diagnostic {
	pos := d.pos.Lookup(path)
	return Diagnostic{
		Severity: sev, Code: code, File: d.meta.File, Doc: d.meta.Doc, Line: pos.Line, Column: pos.Column,
		Resource: d.resource(), Path: path, Message: msg,
	}
}

// decodeFile splits a file into documents and decodes each one. It returns
// a non-nil error diagnostic (Doc is the first bad document) when the file
// is over MaxFileSize or is not valid YAML; docs is then nil. Empty
// documents are skipped.
func decodeFile(file string, data []byte) (docs []*document, fileDiag *Diagnostic) {
	if len(data) > MaxFileSize {
		return nil, &Diagnostic{
			Severity: SeverityError, Code: CodeFileTooLarge, File: file,
			Message: fmt.Sprintf("the file is %s, over the %s limit per file; it is not read and its last good resources stay in force (split it into several files)",
				byteSize(len(data)), byteSize(MaxFileSize)),
		}
	}
	data = lineFeeds(data)
	for i, seg := range splitDocuments(data) {
		n := i + 1
		var root yaml.Node
		dec := yaml.NewDecoder(bytes.NewReader(seg.data))
		err := dec.Decode(&root)
		if errors.Is(err, io.EOF) {
			err = nil // empty, or only comments
		}
		if err != nil {
			line, msg := yamlErrorLine(err)
			if line > 0 {
				line += seg.line - 1
				msg += tabHint(data, line)
			}
			return nil, &Diagnostic{
				Severity: SeverityError, Code: CodeInvalidYAML, File: file, Doc: n, Line: line,
				Message: fmt.Sprintf("invalid YAML: %s; the file is ignored and its last good resources stay in force", msg),
			}
		}
		// The splitter and YAML must agree on where documents end, or a
		// document YAML sees after a separator the splitter did not (one
		// after a line break other than CR or LF) would be dropped
		// without a word.
		if next := (yaml.Node{}); root.Kind != 0 && !errors.Is(dec.Decode(&next), io.EOF) {
			return nil, &Diagnostic{
				Severity: SeverityError, Code: CodeInvalidYAML, File: file, Doc: n, Line: seg.line,
				Message: "invalid YAML: the document holds a second YAML document, after a \"---\" that is not on a line of its own (a line break other than LF, CRLF or CR?); the file is ignored and its last good resources stay in force",
			}
		}
		if root.Kind == 0 || len(root.Content) == 0 || isNull(root.Content[0]) {
			continue // empty, or only comments
		}
		if items, ok := listItems(root.Content[0]); ok {
			for _, item := range items {
				if !isNull(item) {
					docs = append(docs, decodeDocument(file, n, seg.line-1, item))
				}
			}
			continue
		}
		docs = append(docs, decodeDocument(file, n, seg.line-1, root.Content[0]))
	}
	return docs, nil
}

// lineFeeds returns data with every lone CR (a line break of classic Mac
// OS files, which YAML counts as one) made an LF, so that the document
// splitter, the line numbers of diagnostics and YAML count lines alike;
// CRLF stays. The length, and so every byte offset, is unchanged. data
// itself is returned when it has no lone CR.
func lineFeeds(data []byte) []byte {
	var out []byte
	for i := bytes.IndexByte(data, '\r'); i >= 0; {
		if i+1 >= len(data) || data[i+1] != '\n' {
			if out == nil {
				out = slices.Clone(data)
			}
			out[i] = '\n'
		}
		j := bytes.IndexByte(data[i+1:], '\r')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	if out == nil {
		return data
	}
	return out
}

// yamlLine finds the line number yaml.v3 puts in its error messages.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// yamlErrorLine splits a yaml.v3 error into its line (0 when it names
// none) and the message without the "yaml: line N: " prefix.
func yamlErrorLine(err error) (int, string) {
	msg := err.Error()
	m := yamlLine.FindStringSubmatch(msg)
	if m == nil {
		return 0, strings.TrimPrefix(msg, "yaml: ")
	}
	line, _ := strconv.Atoi(m[1])
	return line, msg[len(m[0]):]
}

// tabHint explains the commonest YAML mistake when line holds a tab.
func tabHint(data []byte, line int) string {
	lines := bytes.Split(data, []byte("\n"))
	if line-1 < len(lines) && bytes.ContainsRune(lines[line-1], '\t') {
		return " (YAML does not allow tabs for indentation)"
	}
	return ""
}

func byteSize(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", n>>10)
}

// segment is one YAML document of a file and the line it starts on.
type segment struct {
	data []byte
	line int
}

// separator matches a YAML document separator line: "---", optionally
// followed by a comment.
var separator = regexp.MustCompile(`^---\s*(#.*)?$`)

// splitDocuments splits a multi-document YAML stream on "---" lines. A
// leading segment with nothing but comments (a file that starts with "---")
// is not a document.
func splitDocuments(data []byte) []segment {
	var (
		docs []segment
		cur  = segment{line: 1}
	)
	for i, line := range bytes.SplitAfter(data, []byte("\n")) {
		trimmed := bytes.TrimRight(line, "\r\n")
		if separator.Match(trimmed) {
			docs = append(docs, cur)
			cur = segment{line: i + 2}
			continue
		}
		if bytes.Equal(trimmed, []byte("...")) {
			line = []byte("\n") // a document end marker; keep the line count
		}
		cur.data = append(cur.data, line...)
	}
	docs = append(docs, cur)
	if len(docs) > 1 && len(bytes.TrimSpace(stripComments(docs[0].data))) == 0 {
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

// topFields are the fields of a Kubernetes object Weft reads; status is
// allowed and ignored.
var topFields = []string{"apiVersion", "kind", "metadata", "spec", "status"}

// metadataFields are the fields of Kubernetes' ObjectMeta. Weft reads
// name, namespace, labels, annotations and creationTimestamp; the others
// are allowed (a resource exported with kubectl has them) and ignored.
var metadataFields = map[string]bool{
	"name": true, "namespace": true, "labels": true, "annotations": true, "creationTimestamp": true,
	"generateName": true, "uid": true, "resourceVersion": true, "generation": true, "selfLink": true,
	"deletionTimestamp": true, "deletionGracePeriodSeconds": true, "ownerReferences": true,
	"finalizers": true, "managedFields": true,
}

// kubernetesGroups are the API groups of Kubernetes' own objects that are
// not mesh configuration (Deployments, Services, RBAC, ...), besides the
// core group and the *.k8s.io groups other than the Gateway API's.
var kubernetesGroups = map[string]bool{"apps": true, "batch": true, "autoscaling": true, "policy": true}

// isKubernetesObject reports whether apiVersion is that of a Kubernetes
// object of its own API (core v1, apps/v1, rbac.authorization.k8s.io/v1,
// ...), as opposed to mesh configuration.
func isKubernetesObject(apiVersion string) bool {
	group, _, hasGroup := strings.Cut(apiVersion, "/")
	if !hasGroup {
		return apiVersion == "v1"
	}
	return kubernetesGroups[group] || (strings.HasSuffix(group, ".k8s.io") && group != gatewayAPIGroup && !strings.HasSuffix(group, "."+gatewayAPIGroup))
}

// kubernetesObjectMessage says why a Kubernetes object in a file is
// skipped, and where Weft reads what the user may have meant.
func kubernetesObjectMessage(kind, apiVersion string) string {
	switch kind {
	case "Service", "Endpoints", "EndpointSlice":
		return fmt.Sprintf("a Kubernetes %s is not read from files: Weft reads Services and their endpoints from the Kubernetes API server (weft serve --kubeconfig), and from ServiceEntries and WorkloadEntries in files; skipped", kind)
	case "Secret":
		return "a Kubernetes Secret is not read from config files: a gateway reads the credentials its credentialName names from its own --credential-dir (weft-proxy --gateway; a Secret mounted there on Kubernetes); skipped"
	}
	return fmt.Sprintf("a Kubernetes %s (%s) is not mesh configuration: Weft does not read it; skipped", kind, apiVersion)
}

// listItems returns the items of a Kubernetes List (apiVersion v1, kind
// List: what kubectl get -o yaml prints for several objects), which are
// read as documents of their own; ok is false for any other node.
func listItems(n *yaml.Node) (items []*yaml.Node, ok bool) {
	if n.Kind != yaml.MappingNode {
		return nil, false
	}
	var kind, apiVersion string
	var list *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "kind":
			kind = v.Value
		case "apiVersion":
			apiVersion = v.Value
		case "items":
			list = v
		}
	}
	if kind != "List" || apiVersion != "v1" || list == nil || list.Kind != yaml.SequenceNode {
		return nil, false
	}
	return list.Content, true
}

// decodeDocument decodes the top node of one non-empty document;
// lineOffset is the document's first line in the file, minus 1.
func decodeDocument(file string, n, lineOffset int, root *yaml.Node) *document {
	d := &document{meta: Meta{File: file, Doc: n, Namespace: "default"}, pos: Positions{}}
	dec := &yamlDecoder{lineOffset: lineOffset, pos: d.pos}
	d.meta.Line = root.Line + lineOffset
	defer d.collect(dec)

	if root = dec.resolve(root, ""); root == nil {
		return d
	}
	dec.at("", root)
	if root.Kind != yaml.MappingNode {
		dec.errf("", "a resource must be a mapping with apiVersion, kind, metadata and spec, got %s", describe(root))
		return d
	}
	var kind, apiVersion string
	var metadata, specNode *yaml.Node
	misspeltMetadata := false // "metdata:": its name is not missing, it is misspelt
	var unknown []string      // top-level keys other than topFields
	for _, p := range dec.pairs(root, "") {
		key := p.key.Value
		v := dec.resolve(p.value, key)
		if v == nil {
			return d
		}
		dec.at(key, v)
		switch key {
		case "kind":
			kind = dec.str(v, key)
		case "apiVersion":
			apiVersion = dec.str(v, key)
		case "metadata":
			metadata = v
		case "spec":
			specNode = v
		case "status":
		default:
			unknown = append(unknown, key)
		}
	}

	d.meta.APIVersion = apiVersion
	// Kinds are named within their API group: a Gateway of
	// gateway.networking.k8s.io is the Gateway API's, not Istio's.
	var spec any
	internalKind := Kind(kind)
	if group, _, _ := strings.Cut(apiVersion, "/"); group == gatewayAPIGroup {
		internalKind, spec = newGatewayAPISpec(kind)
	} else if kind == string(KindNamespace) {
		spec = &NamespaceSpec{}
	} else if m := newSpec(Kind(kind)); m != nil {
		spec = m
	}
	skipped := kind != "" && spec == nil && isKubernetesObject(apiVersion)
	if !skipped {
		// (A Kubernetes object Weft skips has fields of its own: a
		// Secret's data, a ConfigMap's.)
		for _, key := range unknown {
			hint := suggestOf(key, topFields)
			dec.errf(key, "unknown field %q; a resource has apiVersion, kind, metadata, spec (and status)%s", key, hint)
			misspeltMetadata = misspeltMetadata || strings.Contains(hint, `"metadata"`)
		}
	}
	switch {
	case kind == "":
		dec.errf("kind", "kind is required")
		return d
	case skipped:
		// An application's manifests often sit beside its mesh config
		// (Istio's samples hold both in one file): say what is skipped,
		// but it is not a mistake in the mesh config.
		d.diags = append(d.diags, d.diag(SeverityWarning, CodeKubernetesObject, "kind", kubernetesObjectMessage(kind, apiVersion)))
		return d
	case spec == nil && kind == "EnvoyFilter":
		dec.errf("kind", "unsupported kind %q: Weft does not patch the proxies' config; rate limits, the commonest use, are Weft's RateLimit kind (docs/rate-limiting.md) (Weft loads %s)", kind, supportedKinds)
		return d
	case spec == nil:
		dec.errf("kind", "unsupported kind %q (Weft loads %s)", kind, supportedKinds)
		return d
	}
	d.meta.Kind = internalKind
	// Name the resource before any further check, so a document rejected
	// from here on keeps its last good version in force.
	if metadata == nil && misspeltMetadata {
		return d
	}
	labels := d.decodeMetadata(dec, metadata)
	if d.meta.Name == "" {
		return d
	}
	if ns, ok := spec.(*NamespaceSpec); ok {
		if strings.Contains(d.meta.Name, ".") || len(d.meta.Name) > 63 {
			dec.errf("metadata.name", "invalid Namespace name %q: must be a lowercase DNS-1123 label", d.meta.Name)
		}
		ns.Labels = labels
	}
	if ok, want := checkAPIVersion(d.meta.Kind, apiVersion); !ok {
		dec.errf("apiVersion", "unsupported apiVersion %q for %s (want %s)", apiVersion, kind, want)
	}
	if specNode != nil && !isNull(specNode) && specNode.Kind != yaml.MappingNode {
		dec.errf("spec", "spec must be a mapping, got %s", describe(specNode))
		return d
	}
	if specNode != nil {
		if m, ok := spec.(proto.Message); ok {
			dec.message(specNode, "spec", m.ProtoReflect())
		} else {
			dec.goValue(specNode, "spec", reflect.ValueOf(spec).Elem())
		}
	}
	d.spec = spec
	return d
}

// decodeMetadata reads name, namespace, annotations and creationTimestamp
// into d and checks the rest of metadata. It returns the labels.
func (d *document) decodeMetadata(dec *yamlDecoder, n *yaml.Node) (labels map[string]string) {
	var name, namespace string
	if n != nil && !isNull(n) {
		if n.Kind != yaml.MappingNode {
			dec.errf("metadata", "metadata must be a mapping, got %s", describe(n))
			return
		}
		for _, p := range dec.pairs(n, "metadata") {
			key := p.key.Value
			path := "metadata." + key
			v := dec.resolve(p.value, path)
			if v == nil {
				return
			}
			dec.at(path, v)
			switch key {
			case "name":
				name = dec.str(v, path)
			case "namespace":
				namespace = dec.str(v, path)
			case "labels":
				labels = dec.stringMap(v, path)
			case "annotations":
				d.annotations = dec.stringMap(v, path)
				checkAnnotations(dec, d.meta.Kind, path, d.annotations)
			case "creationTimestamp":
				if isNull(v) {
					continue
				}
				t, err := time.Parse(time.RFC3339, v.Value)
				if v.Kind != yaml.ScalarNode || err != nil {
					dec.errf(path, "want an RFC 3339 time such as 2024-05-01T10:00:00Z, got %s", describe(v))
					continue
				}
				d.meta.Created = t.UTC()
			default:
				if !metadataFields[key] {
					dec.errf(path, "unknown field %q in metadata%s", key, suggestOf(key, []string{"name", "namespace", "labels", "annotations"}))
				}
			}
		}
	}
	if namespace != "" {
		d.meta.Namespace = namespace
	}
	// Name the resource even when the name is invalid, so messages say which.
	d.meta.Name = name
	switch {
	case name == "":
		dec.errf("metadata.name", "name is required")
		return
	case !dns1123.MatchString(name) || len(name) > 253:
		dec.errf("metadata.name", "invalid name %q: must be a lowercase DNS-1123 subdomain", name)
		return
	case !dns1123.MatchString(d.meta.Namespace) || strings.Contains(d.meta.Namespace, ".") || len(d.meta.Namespace) > 63:
		dec.errf("metadata.namespace", "invalid namespace %q: must be a lowercase DNS-1123 label", d.meta.Namespace)
		return
	}
	return labels
}

// str reads a string scalar.
func (dec *yamlDecoder) str(n *yaml.Node, path string) string {
	if isNull(n) {
		return ""
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		dec.errf(path, "want a string, got %s", describe(n))
		return ""
	}
	return n.Value
}

// stringMap reads a mapping of strings to strings (labels, annotations).
func (dec *yamlDecoder) stringMap(n *yaml.Node, path string) map[string]string {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		dec.errf(path, "want a mapping of strings, got %s", describe(n))
		return nil
	}
	out := map[string]string{}
	for _, p := range dec.pairs(n, path) {
		ep := joinPath(path, p.key.Value)
		v := dec.resolve(p.value, ep)
		if v == nil {
			return out
		}
		dec.at(ep, v)
		if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!str" {
			dec.errf(ep, "want a string, got %s; quote it: %q", describe(v), v.Value)
			continue
		}
		out[p.key.Value] = v.Value
	}
	return out
}

// collect turns the decoder's errors into d's diagnostics, at their
// positions and with d's resource name.
func (d *document) collect(dec *yamlDecoder) {
	for _, e := range dec.errs {
		code := CodeInvalidField
		switch {
		case strings.HasPrefix(e.msg, "unknown field"):
			code = CodeUnknownField
		case e.path == "" || e.path == "kind" || e.path == "apiVersion" || e.path == "metadata" ||
			e.path == "metadata.name" || e.path == "metadata.namespace":
			code = CodeInvalidResource
		}
		d.diags = append(d.diags, d.diag(SeverityError, code, e.path, e.msg))
	}
	d.decodeErrors = len(dec.errs)
}

// suggestOf returns "; did you mean X?" for a likely misspelling of one of names.
func suggestOf(name string, names []string) string {
	best, bestDist := "", 3
	for _, c := range names {
		if dist := editDistance(strings.ToLower(name), strings.ToLower(c)); dist < bestDist {
			best, bestDist = c, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf("; did you mean %q?", best)
}

// checkAnnotations applies Istio's rules on annotations of resources of
// kind k: istio.io/dry-run is for AuthorizationPolicy only (its value is
// checked with the spec: validateDryRun), and the internal annotations may
// not be set by users.
func checkAnnotations(dec *yamlDecoder, k Kind, path string, a map[string]string) {
	if _, ok := a[annotationDryRun]; ok && k != KindAuthorizationPolicy {
		dec.errf(path+".istio.io/dry-run", "the annotation istio.io/dry-run is supported on AuthorizationPolicy only; remove it")
	}
	for _, k := range []string{"internal.istio.io/webhook-always-reject", "internal.istio.io/parent-namespace", "internal.istio.io/parents"} {
		if _, ok := a[k]; ok {
			dec.errf(path+"."+k, "the annotation %s is internal to Istio and may not be set by users", k)
		}
	}
}
