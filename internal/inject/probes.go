package inject

import (
	"encoding/json"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Prober is one original application probe, as the proxy gets it in
// WEFT_APP_PROBERS: a JSON object from "/app-health/<container>/<kind>"
// to Prober, the shape of Istio's ISTIO_KUBE_APP_PROBERS. Ports are
// numbers (named ports are resolved at injection). weft-proxy decodes it
// with its own copy of this shape (it links no Kubernetes packages).
type Prober struct {
	HTTPGet        *HTTPGet   `json:"httpGet,omitempty"`
	TCPSocket      *TCPSocket `json:"tcpSocket,omitempty"`
	GRPC           *GRPC      `json:"grpc,omitempty"`
	TimeoutSeconds int32      `json:"timeoutSeconds,omitempty"`
}

// HTTPGet is an httpGet probe.
type HTTPGet struct {
	Path        string       `json:"path,omitempty"`
	Port        int32        `json:"port"`
	Host        string       `json:"host,omitempty"`
	Scheme      string       `json:"scheme,omitempty"`
	HTTPHeaders []HTTPHeader `json:"httpHeaders,omitempty"`
}

// HTTPHeader is a header an httpGet probe sends.
type HTTPHeader struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// TCPSocket is a tcpSocket probe.
type TCPSocket struct {
	Host string `json:"host,omitempty"`
	Port int32  `json:"port"`
}

// GRPC is a grpc probe (grpc.health.v1.Health/Check).
type GRPC struct {
	Port    int32   `json:"port"`
	Service *string `json:"service,omitempty"`
}

// rewriteProbes points the app containers' httpGet, tcpSocket and grpc
// probes at the proxy's AppProbesPort and returns the originals as JSON
// ("" when none, or when the pod opts out with
// sidecar.istio.io/rewriteAppHTTPProbers: "false").
func rewriteProbes(t *corev1.PodTemplateSpec) (string, error) {
	if v, set := parseBool(t.Annotations[AnnotationRewriteProbes]); set && !v {
		return "", nil
	}
	probers := map[string]Prober{}
	for i := range t.Spec.Containers {
		c := &t.Spec.Containers[i]
		for _, p := range []struct {
			kind  string
			probe *corev1.Probe
		}{{"readyz", c.ReadinessProbe}, {"livez", c.LivenessProbe}, {"startupz", c.StartupProbe}} {
			if p.probe == nil {
				continue
			}
			pr, ok, err := prober(c, p.probe)
			if err != nil {
				return "", fmt.Errorf("container %s: %s probe: %w", c.Name, strings.TrimSuffix(p.kind, "z"), err)
			}
			if !ok {
				continue
			}
			path := "/app-health/" + c.Name + "/" + p.kind
			probers[path] = pr
			p.probe.ProbeHandler = corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: path, Port: intstr.FromInt32(AppProbesPort), Scheme: corev1.URISchemeHTTP}}
		}
	}
	if len(probers) == 0 {
		return "", nil
	}
	b, err := json.Marshal(probers) // map keys are sorted: stable output
	if err != nil {
		return "", err
	}
	return string(b), nil
}

func prober(c *corev1.Container, p *corev1.Probe) (Prober, bool, error) {
	// Kubernetes' defaults are filled in, so the pod the webhook gets (the
	// API server has defaulted it) and the manifest `weft inject` reads
	// give the same value.
	out := Prober{TimeoutSeconds: p.TimeoutSeconds}
	if out.TimeoutSeconds == 0 {
		out.TimeoutSeconds = 1
	}
	switch {
	case p.HTTPGet != nil:
		port, err := resolvePort(c, p.HTTPGet.Port)
		if err != nil {
			return out, false, err
		}
		h := &HTTPGet{Path: p.HTTPGet.Path, Port: port, Host: p.HTTPGet.Host, Scheme: string(p.HTTPGet.Scheme)}
		if h.Scheme == "" {
			h.Scheme = string(corev1.URISchemeHTTP)
		}
		for _, hd := range p.HTTPGet.HTTPHeaders {
			h.HTTPHeaders = append(h.HTTPHeaders, HTTPHeader{Name: hd.Name, Value: hd.Value})
		}
		out.HTTPGet = h
	case p.TCPSocket != nil:
		port, err := resolvePort(c, p.TCPSocket.Port)
		if err != nil {
			return out, false, err
		}
		out.TCPSocket = &TCPSocket{Host: p.TCPSocket.Host, Port: port}
	case p.GRPC != nil:
		out.GRPC = &GRPC{Port: p.GRPC.Port, Service: p.GRPC.Service}
		if out.GRPC.Service != nil && *out.GRPC.Service == "" {
			out.GRPC.Service = nil
		}
	default:
		return out, false, nil // exec probes run in the container: nothing to rewrite
	}
	return out, true, nil
}

func resolvePort(c *corev1.Container, p intstr.IntOrString) (int32, error) {
	if p.Type == intstr.Int {
		if p.IntVal < 1 || p.IntVal > 65535 {
			return 0, fmt.Errorf("port %d is out of range", p.IntVal)
		}
		return p.IntVal, nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort, nil
		}
	}
	return 0, fmt.Errorf("port %q is not a port name of the container", p.StrVal)
}

// WorkloadName is the name weft-proxy announces for a pod (its
// --workload), as the Kubernetes registry derives it: the
// service.istio.io/workload-name label, else the controlling owner (a
// ReplicaSet's name without its pod-template-hash suffix, i.e. the
// Deployment's), else the pod's name, else its generateName without the
// trailing dash.
func WorkloadName(meta *metav1.ObjectMeta) string {
	if w := meta.Labels[LabelWorkloadName]; w != "" {
		return w
	}
	for _, o := range meta.OwnerReferences {
		if o.Controller == nil || !*o.Controller {
			continue
		}
		name := o.Name
		if h := meta.Labels["pod-template-hash"]; o.Kind == "ReplicaSet" && h != "" {
			name = strings.TrimSuffix(name, "-"+h)
		}
		return name
	}
	if meta.Name != "" {
		return meta.Name
	}
	return strings.TrimSuffix(meta.GenerateName, "-")
}

// InjectPod injects a Pod object (as the webhook receives it) in the
// namespace ns: Inject with the Pod's metadata and spec, the workload name
// from WorkloadName. It returns pod itself when nothing is injected.
func InjectPod(pod *corev1.Pod, ns string, nsLabels map[string]string, cfg Config) (*corev1.Pod, string, error) {
	tmpl := &corev1.PodTemplateSpec{ObjectMeta: pod.ObjectMeta, Spec: pod.Spec}
	out, why, err := Inject(tmpl, ns, nsLabels, WorkloadName(&pod.ObjectMeta), cfg)
	if err != nil || why != "" {
		return pod, why, err
	}
	res := pod.DeepCopy()
	res.ObjectMeta = out.ObjectMeta
	res.Spec = out.Spec
	return res, "", nil
}
