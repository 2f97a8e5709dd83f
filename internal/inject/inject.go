// Package inject adds Weft's sidecar to Kubernetes pod specs, following
// Istio's injection rules: which pods get a sidecar (namespace labels,
// the sidecar.istio.io/inject override, revisions), what is added (the
// capture init container, weft-proxy as a native sidecar, the identity
// volumes, the status annotation and labels) and how application probes
// are rewritten so they keep working once traffic is captured.
//
// Inject is a pure function of the pod template, its namespace's labels
// and a Config: the admission webhook (package inject/webhook) and the
// `weft inject` command share it, so both give the same output.
package inject

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"weft.dev/weft/internal/proxy/capture"
)

// Names of what Inject adds.
const (
	ProxyContainer   = "weft-proxy"
	CaptureContainer = "weft-capture"
	TokenVolume      = "istio-token"
	RootCertVolume   = "weft-ca-root-cert"
	// RootCertConfigMap is the ConfigMap, in the pod's namespace, holding
	// the mesh's trust root under the key root-cert.pem.
	RootCertConfigMap = "weft-ca-root-cert"
	TokenDir          = "/var/run/secrets/tokens"
	RootCertDir       = "/var/run/secrets/weft"
	// TokenAudience is the audience the projected token is issued for
	// (weft serve --kube-token-audience).
	TokenAudience = "istio-ca"

	DefaultImage      = "weft/weft-proxy:latest"
	DefaultXDSAddress = "weft.weft-system.svc:15012"

	// proxyDefaultDrain is weft-proxy's --drain-timeout default.
	proxyDefaultDrain = 5 * time.Second

	ProxyUID      = 1337 // the proxy runs as this UID/GID; capture exempts it
	OutboundPort  = 15001
	InboundPort   = 15006
	AdminPort     = 15000
	AppProbesPort = 15020
	// ProbersEnv carries the original application probes to the proxy,
	// shaped like Istio's ISTIO_KUBE_APP_PROBERS.
	ProbersEnv = "WEFT_APP_PROBERS"
	// ReadyPath is the proxy's own readiness on AppProbesPort.
	ReadyPath = "/healthz/ready"
	// MetricsPath serves the proxy's metrics merged with the app's on
	// AppProbesPort; MetricsEnv carries the app's own scrape settings to
	// the proxy, shaped like Istio's ISTIO_PROMETHEUS_ANNOTATIONS.
	MetricsPath = "/stats/prometheus"
	MetricsEnv  = "WEFT_PROMETHEUS_ANNOTATIONS"
)

// Labels and annotations read or written, as Istio spells them.
const (
	LabelIstioInjection     = "istio-injection"
	LabelWeftInjection      = "weft.dev/inject"
	LabelRevision           = "istio.io/rev"
	KeyInject               = "sidecar.istio.io/inject"
	AnnotationStatus        = "sidecar.istio.io/status"
	AnnotationRewriteProbes = "sidecar.istio.io/rewriteAppHTTPProbers"
	AnnotationProxyConfig   = "proxy.istio.io/config"
	AnnotationProxyCPU      = "sidecar.istio.io/proxyCPU"
	AnnotationProxyMemory   = "sidecar.istio.io/proxyMemory"
	AnnotationProxyCPULimit = "sidecar.istio.io/proxyCPULimit"
	AnnotationProxyMemLimit = "sidecar.istio.io/proxyMemoryLimit"
	AnnotationProxyImage    = "sidecar.istio.io/proxyImage"
	AnnotationDefaultCont   = "kubectl.kubernetes.io/default-container"
	AnnotationIncludeOutIPs = "traffic.sidecar.istio.io/includeOutboundIPRanges"
	AnnotationExcludeOutIPs = "traffic.sidecar.istio.io/excludeOutboundIPRanges"
	AnnotationIncludeInPort = "traffic.sidecar.istio.io/includeInboundPorts"
	AnnotationExcludeInPort = "traffic.sidecar.istio.io/excludeInboundPorts"
	AnnotationExcludeOutPrt = "traffic.sidecar.istio.io/excludeOutboundPorts"
	LabelTLSMode            = "security.istio.io/tlsMode"
	LabelCanonicalName      = "service.istio.io/canonical-name"
	LabelCanonicalRevision  = "service.istio.io/canonical-revision"
	LabelWorkloadName       = "service.istio.io/workload-name"
)

// Config is what the control plane (or `weft inject`) decides for every
// injected pod.
type Config struct {
	// Image of weft-proxy, for both added containers (DefaultImage when
	// empty). The image must have weft-proxy on its PATH.
	Image           string
	ImagePullPolicy corev1.PullPolicy
	// XDSAddress is the control plane's secure port as pods reach it
	// (DefaultXDSAddress when empty).
	XDSAddress string
	// TrustDomain of workload identities; "" leaves weft-proxy's default
	// (cluster.local).
	TrustDomain string
	// Revision this injector serves; "" and "default" are the default
	// revision (namespaces labelled istio-injection=enabled).
	Revision string
	// Resources of the proxy container (the sidecar.istio.io/proxy*
	// annotations override them per pod).
	Resources corev1.ResourceRequirements
	// DrainTimeout is weft-proxy's --drain-timeout; 0 keeps its default.
	// proxy.istio.io/config terminationDrainDuration overrides it per pod.
	DrainTimeout time.Duration
}

func (c Config) image() string {
	if c.Image == "" {
		return DefaultImage
	}
	return c.Image
}

func (c Config) xds() string {
	if c.XDSAddress == "" {
		return DefaultXDSAddress
	}
	return c.XDSAddress
}

func normRev(r string) string {
	if r == "default" {
		return ""
	}
	return r
}

// ignoredNamespaces never get sidecars, as in Istio.
var ignoredNamespaces = []string{"kube-system", "kube-public", "kube-node-lease"}

// Decide says whether a pod with these labels and annotations, in a
// namespace named ns with nsLabels, gets a sidecar from an injector of
// revision rev: "" means yes, else the reason it does not.
//
// The rules are Istio's: a pod's sidecar.istio.io/inject (label, else
// annotation) "false" always opts out; a namespace labelled
// istio-injection=disabled (or weft.dev/inject=disabled) opts all its pods
// out; otherwise a pod is injected when its namespace is labelled
// istio-injection=enabled (or weft.dev/inject=enabled), when it or its
// namespace has an istio.io/rev label, or when it says
// sidecar.istio.io/inject "true" — and only by the injector of the
// revision asked: the default revision in a namespace labelled
// istio-injection=enabled, else the pod's istio.io/rev, else the
// namespace's, else the default.
func Decide(ns string, nsLabels, labels, annotations map[string]string, rev string) string {
	if slices.Contains(ignoredNamespaces, ns) {
		return "namespace " + ns + " is never injected"
	}
	opt, src := labels[KeyInject], "label"
	if opt == "" {
		opt, src = annotations[KeyInject], "annotation"
	}
	podOpt, podSet := parseBool(opt)
	if podSet && !podOpt {
		return fmt.Sprintf("the pod's %s %s is %q", src, KeyInject, opt)
	}
	nsInj := nsLabels[LabelIstioInjection]
	nsKey := LabelIstioInjection
	if nsInj == "" {
		nsInj, nsKey = nsLabels[LabelWeftInjection], LabelWeftInjection
	}
	if nsInj == "disabled" {
		return fmt.Sprintf("namespace %s is labelled %s=disabled", ns, nsKey)
	}
	// The revision asked: a namespace's istio-injection=enabled asks for
	// the default one whatever the pod says (as Istio's webhooks select),
	// else the pod's istio.io/rev, else the namespace's.
	var want string
	switch {
	case nsInj == "enabled":
	case labels[LabelRevision] != "":
		want = labels[LabelRevision]
	default:
		want = nsLabels[LabelRevision]
	}
	if nsInj != "enabled" && !(podSet && podOpt) && want == "" {
		return fmt.Sprintf("neither namespace %s (labels %s or %s=enabled, or %s) nor the pod (%s: \"true\", or %s) asks for a sidecar",
			ns, LabelIstioInjection, LabelWeftInjection, LabelRevision, KeyInject, LabelRevision)
	}
	if normRev(want) != normRev(rev) {
		asked := want
		if asked == "" {
			asked = "default"
		}
		served := rev
		if served == "" {
			served = "default"
		}
		return fmt.Sprintf("revision %q is asked for; this injector serves %q", asked, served)
	}
	return ""
}

func parseBool(s string) (val, set bool) {
	switch strings.ToLower(s) {
	case "true", "y", "yes", "on", "enabled":
		return true, true
	case "false", "n", "no", "off", "disabled":
		return false, true
	}
	return false, false
}

// Status is the sidecar.istio.io/status annotation: what was injected,
// as Istio writes it.
type Status struct {
	InitContainers   []string `json:"initContainers"`
	Containers       []string `json:"containers"`
	Volumes          []string `json:"volumes"`
	ImagePullSecrets []string `json:"imagePullSecrets"`
	Revision         string   `json:"revision"`
}

// Injected reports whether a pod spec already has Weft's sidecar.
func Injected(annotations map[string]string, spec *corev1.PodSpec) bool {
	if _, ok := annotations[AnnotationStatus]; ok {
		return true
	}
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		if c.Name == ProxyContainer {
			return true
		}
	}
	return false
}

// Inject returns a copy of tmpl with Weft's sidecar added, for a pod of
// the namespace ns (with labels nsLabels) run by the workload named
// workload (the Deployment, StatefulSet, … or the pod itself; see
// WorkloadName). When the pod is not to be injected — the rules of
// Decide, host networking, or a sidecar already present — it returns tmpl
// itself unchanged and the reason. An error means an annotation the pod
// carries is invalid; it names the annotation and the value.
func Inject(tmpl *corev1.PodTemplateSpec, ns string, nsLabels map[string]string, workload string, cfg Config) (*corev1.PodTemplateSpec, string, error) {
	if tmpl.Spec.HostNetwork {
		return tmpl, "the pod uses the host's network (hostNetwork: true)", nil
	}
	if Injected(tmpl.Annotations, &tmpl.Spec) {
		return tmpl, "the pod already has a sidecar (" + AnnotationStatus + " or a " + ProxyContainer + " container)", nil
	}
	if why := Decide(ns, nsLabels, tmpl.Labels, tmpl.Annotations, cfg.Revision); why != "" {
		return tmpl, why, nil
	}
	out := tmpl.DeepCopy()
	if err := mutate(out, workload, cfg); err != nil {
		return tmpl, "", err
	}
	return out, "", nil
}

func mutate(t *corev1.PodTemplateSpec, workload string, cfg Config) error {
	ann := t.Annotations
	if t.Labels == nil {
		t.Labels = map[string]string{}
	}
	if t.Annotations == nil {
		t.Annotations = map[string]string{}
	}
	// Labels first: the proxy announces them.
	t.Labels[LabelTLSMode] = "istio"
	if t.Labels[LabelCanonicalName] == "" {
		t.Labels[LabelCanonicalName] = firstOf(t.Labels["app.kubernetes.io/name"], t.Labels["app"], workload)
	}
	if t.Labels[LabelCanonicalRevision] == "" {
		t.Labels[LabelCanonicalRevision] = firstOf(t.Labels["app.kubernetes.io/version"], t.Labels["version"], "latest")
	}

	// The projected token needs a service account; the API server's
	// ServiceAccount admission would set this one.
	if t.Spec.ServiceAccountName == "" {
		t.Spec.ServiceAccountName = "default"
	}

	capture, err := captureContainer(ann, cfg)
	if err != nil {
		return err
	}
	proxy, err := proxyContainer(t, workload, cfg)
	if err != nil {
		return err
	}
	probers, err := rewriteProbes(t)
	if err != nil {
		return err
	}
	if probers != "" {
		proxy.Env = append(proxy.Env, corev1.EnvVar{Name: ProbersEnv, Value: probers})
	}
	if app, ok := mergePrometheus(t); ok && app != "" {
		proxy.Env = append(proxy.Env, corev1.EnvVar{Name: MetricsEnv, Value: app})
	}
	if len(t.Spec.Containers) > 0 && t.Annotations[AnnotationDefaultCont] == "" {
		t.Annotations[AnnotationDefaultCont] = t.Spec.Containers[0].Name
	}
	t.Spec.InitContainers = append([]corev1.Container{capture, proxy}, t.Spec.InitContainers...)
	t.Spec.Volumes = append(t.Spec.Volumes, volumes()...)

	st, _ := json.Marshal(Status{
		InitContainers: []string{CaptureContainer, ProxyContainer},
		Containers:     []string{},
		Volumes:        []string{TokenVolume, RootCertVolume},
		Revision:       firstOf(cfg.Revision, "default"),
	})
	t.Annotations[AnnotationStatus] = string(st)
	return nil
}

func firstOf(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func volumes() []corev1.Volume {
	exp := int64(43200)
	return []corev1.Volume{
		{Name: TokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience: TokenAudience, ExpirationSeconds: &exp, Path: "istio-token"}}},
		}}},
		{Name: RootCertVolume, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: RootCertConfigMap},
			Items:                []corev1.KeyToPath{{Key: "root-cert.pem", Path: "root-cert.pem"}},
		}}},
	}
}

func proxyContainer(t *corev1.PodTemplateSpec, workload string, cfg Config) (corev1.Container, error) {
	ann := t.Annotations
	res, err := resources(ann, cfg.Resources)
	if err != nil {
		return corev1.Container{}, err
	}
	drain, err := drainTimeout(ann, cfg.DrainTimeout)
	if err != nil {
		return corev1.Container{}, err
	}
	// The kubelet kills the proxy terminationGracePeriodSeconds after the
	// pod's deletion: the drain must end before that.
	grace := 30 * time.Second
	if g := t.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	if eff := cmp.Or(drain, proxyDefaultDrain); eff > grace && grace >= time.Second {
		drain = grace
	}
	args := []string{
		"--xds-address", cfg.xds(),
		"--root-cert", RootCertDir + "/root-cert.pem",
		"--token-file", TokenDir + "/istio-token",
	}
	if cfg.TrustDomain != "" {
		args = append(args, "--trust-domain", cfg.TrustDomain)
	}
	args = append(args,
		"--namespace", "$(POD_NAMESPACE)",
		"--workload", workload,
		"--service-account", "$(SERVICE_ACCOUNT)",
		"--ip", "$(INSTANCE_IPS)", // every address of a dual-stack pod, comma separated
		"--interception-mode", "REDIRECT",
	)
	if len(t.Labels) > 0 {
		var kv []string
		for _, k := range slices.Sorted(maps.Keys(t.Labels)) {
			kv = append(kv, k+"="+t.Labels[k])
		}
		args = append(args, "--labels", strings.Join(kv, ","))
	}
	for _, p := range appPorts(&t.Spec) {
		args = append(args, "--app-port", fmt.Sprintf("%d=127.0.0.1:%d", p, p))
	}
	args = append(args,
		"--admin-address", fmt.Sprintf("127.0.0.1:%d", AdminPort),
		"--app-probes-address", fmt.Sprintf("0.0.0.0:%d", AppProbesPort),
	)
	if drain > 0 {
		args = append(args, "--drain-timeout", drain.String())
	}
	conc, err := concurrencyArgs(ann)
	if err != nil {
		return corev1.Container{}, err
	}
	args = append(args, conc...)
	always := corev1.ContainerRestartPolicyAlways
	uid := int64(ProxyUID)
	f := false
	tr := true
	image := firstOf(ann[AnnotationProxyImage], cfg.image())
	ready := func(period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: ReadyPath, Port: intstr.FromInt32(AppProbesPort), Scheme: corev1.URISchemeHTTP}},
			PeriodSeconds: period, FailureThreshold: failures, TimeoutSeconds: 3,
		}
	}
	return corev1.Container{
		Name:            ProxyContainer,
		Image:           image,
		ImagePullPolicy: cfg.ImagePullPolicy,
		Command:         []string{"weft-proxy"},
		Args:            args,
		Env: []corev1.EnvVar{
			fieldEnv("POD_NAME", "metadata.name"),
			fieldEnv("POD_NAMESPACE", "metadata.namespace"),
			fieldEnv("INSTANCE_IP", "status.podIP"),
			fieldEnv("INSTANCE_IPS", "status.podIPs"),
			fieldEnv("SERVICE_ACCOUNT", "spec.serviceAccountName"),
		},
		Ports: []corev1.ContainerPort{{Name: "weft-probes", ContainerPort: AppProbesPort, Protocol: corev1.ProtocolTCP}},
		// The startup probe holds the app containers until the proxy has
		// its certificate and first config (holdApplicationUntilProxyStarts).
		StartupProbe:   ready(1, 600),
		ReadinessProbe: ready(15, 4),
		Resources:      res,
		RestartPolicy:  &always,
		VolumeMounts: []corev1.VolumeMount{
			{Name: TokenVolume, MountPath: TokenDir, ReadOnly: true},
			{Name: RootCertVolume, MountPath: RootCertDir, ReadOnly: true},
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser: &uid, RunAsGroup: &uid, RunAsNonRoot: &tr,
			AllowPrivilegeEscalation: &f, ReadOnlyRootFilesystem: &tr, Privileged: &f,
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}, nil
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path}}}
}

// appPorts lists the TCP container ports of the app containers, sorted.
func appPorts(spec *corev1.PodSpec) []int32 {
	var out []int32
	for _, c := range spec.Containers {
		for _, p := range c.Ports {
			if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
				out = append(out, p.ContainerPort)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func resources(ann map[string]string, base corev1.ResourceRequirements) (corev1.ResourceRequirements, error) {
	r := *base.DeepCopy()
	set := func(key string, list *corev1.ResourceList, name corev1.ResourceName) error {
		v, ok := ann[key]
		if !ok {
			return nil
		}
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return fmt.Errorf("annotation %s: %q is not a quantity: %w", key, v, err)
		}
		if *list == nil {
			*list = corev1.ResourceList{}
		}
		(*list)[name] = q
		return nil
	}
	for _, s := range []struct {
		key  string
		list *corev1.ResourceList
		name corev1.ResourceName
	}{
		{AnnotationProxyCPU, &r.Requests, corev1.ResourceCPU},
		{AnnotationProxyMemory, &r.Requests, corev1.ResourceMemory},
		{AnnotationProxyCPULimit, &r.Limits, corev1.ResourceCPU},
		{AnnotationProxyMemLimit, &r.Limits, corev1.ResourceMemory},
	} {
		if err := set(s.key, s.list, s.name); err != nil {
			return r, err
		}
	}
	return r, nil
}

// podProxyConfig is what the injector reads of a pod's
// proxy.istio.io/config annotation (a ProxyConfig in YAML).
type podProxyConfig struct {
	TerminationDrainDuration string `json:"terminationDrainDuration"`
	Concurrency              *int32 `json:"concurrency"`
}

// proxyConfigOf parses the pod's proxy.istio.io/config; the zero value
// when it has none.
func proxyConfigOf(ann map[string]string) (podProxyConfig, error) {
	var pc podProxyConfig
	raw, ok := ann[AnnotationProxyConfig]
	if !ok {
		return pc, nil
	}
	if err := yaml.Unmarshal([]byte(raw), &pc); err != nil {
		return pc, fmt.Errorf("annotation %s: not a ProxyConfig in YAML: %w", AnnotationProxyConfig, err)
	}
	return pc, nil
}

// drainTimeout reads terminationDrainDuration from proxy.istio.io/config,
// else def.
func drainTimeout(ann map[string]string, def time.Duration) (time.Duration, error) {
	pc, err := proxyConfigOf(ann)
	if err != nil {
		return 0, err
	}
	if pc.TerminationDrainDuration == "" {
		return def, nil
	}
	d, err := time.ParseDuration(pc.TerminationDrainDuration)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("annotation %s: terminationDrainDuration %q is not a duration such as 30s", AnnotationProxyConfig, pc.TerminationDrainDuration)
	}
	return d, nil
}

// concurrencyArgs is weft-proxy's --concurrency for the pod's
// proxy.istio.io/config concurrency (as Istio passes it to Envoy); none
// when unset, leaving weft-proxy's default.
func concurrencyArgs(ann map[string]string) ([]string, error) {
	pc, err := proxyConfigOf(ann)
	if err != nil || pc.Concurrency == nil {
		return nil, err
	}
	if *pc.Concurrency < 0 {
		return nil, fmt.Errorf("annotation %s: concurrency %d: want the number of worker threads, or 0 for every CPU", AnnotationProxyConfig, *pc.Concurrency)
	}
	return []string{"--concurrency", strconv.Itoa(int(*pc.Concurrency))}, nil
}

func captureContainer(ann map[string]string, cfg Config) (corev1.Container, error) {
	args := []string{"capture",
		"--outbound-port", strconv.Itoa(OutboundPort),
		"--inbound-port", strconv.Itoa(InboundPort),
		"--proxy-uid", strconv.Itoa(ProxyUID),
	}
	// Istio's traffic.sidecar.istio.io/* annotations, checked as the
	// capture command checks its flags, so a bad one is refused here with
	// its name rather than failing the pod's start. The proxy's own ports
	// (15020 for the kubelet's probes included) are always excluded by the
	// capture command itself.
	extra, err := capture.ArgsFromAnnotations(ann)
	if err != nil {
		return corev1.Container{}, err
	}
	args = append(args, extra...)
	zero := int64(0)
	f := false
	return corev1.Container{
		Name:            CaptureContainer,
		Image:           cfg.image(),
		ImagePullPolicy: cfg.ImagePullPolicy,
		Command:         []string{"weft-proxy"},
		Args:            args,
		Resources:       *cfg.Resources.DeepCopy(),
		SecurityContext: &corev1.SecurityContext{
			RunAsUser: &zero, RunAsGroup: &zero, RunAsNonRoot: &f,
			AllowPrivilegeEscalation: &f, Privileged: &f,
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
				Drop: []corev1.Capability{"ALL"},
			},
		},
	}, nil
}
