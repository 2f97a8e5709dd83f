package kube

import (
	"maps"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"weft.dev/weft/internal/registry"
)

// Labels and annotations the conversion reads or writes, spelled as
// Kubernetes and Istio spell them.
const (
	labelRegion   = corev1.LabelTopologyRegion // topology.kubernetes.io/region
	labelZone     = corev1.LabelTopologyZone   // topology.kubernetes.io/zone
	labelSubzone  = "topology.istio.io/subzone"
	labelHostname = corev1.LabelHostname // kubernetes.io/hostname
	// labelLocality on a Pod overrides the Node's locality; "." separates
	// its parts because "/" is not allowed in label values.
	labelLocality    = "topology.istio.io/locality"
	labelLocalityOld = "istio-locality"
	// labelWorkloadName on a Pod overrides the workload name derived from
	// its owner.
	labelWorkloadName = "service.istio.io/workload-name"
	labelPodTemplate  = "pod-template-hash"
)

// ServiceHostname is the mesh host of Kubernetes Service name in namespace
// ns: <name>.<ns>.svc.<domainSuffix>.
func ServiceHostname(name, ns, domainSuffix string) string {
	if domainSuffix == "" {
		domainSuffix = registry.DefaultDomainSuffix
	}
	return name + "." + ns + ".svc." + domainSuffix
}

// portProtocol is the mesh protocol of a Service port, as Istio's
// ConvertProtocol decides it: appProtocol when set (with Kubernetes'
// kubernetes.io/h2c, /ws and /wss), else the port's name; the name (or
// appProtocol) is read up to its first "-" ("http-web" is HTTP, "grpc-api"
// is GRPC; "grpc-web…" is gRPC-Web, which Weft carries as GRPC). Names
// Istio does not know (and no name) are Auto: a captured sidecar detects
// HTTP per connection, as Istio's protocol sniffing. ok is false for UDP and SCTP ports, which the mesh does not
// carry; they are left out of the service.
func portProtocol(p corev1.ServicePort) (proto registry.Protocol, ok bool) {
	if p.Protocol == corev1.ProtocolUDP || p.Protocol == corev1.ProtocolSCTP {
		return "", false
	}
	name := p.Name
	if p.AppProtocol != nil {
		name = *p.AppProtocol
		switch name {
		case "kubernetes.io/h2c":
			return registry.HTTP2, true
		case "kubernetes.io/ws":
			return registry.HTTP, true
		case "kubernetes.io/wss":
			return registry.HTTPS, true
		}
	}
	if len(name) >= len("grpc-web") && strings.EqualFold(name[:len("grpc-web")], "grpc-web") {
		return registry.GRPC, true
	}
	if i := strings.IndexByte(name, '-'); i >= 0 {
		name = name[:i]
	}
	proto, known := registry.ParseProtocol(name)
	if !known {
		proto = registry.Auto
	}
	return proto, true
}

// service is a converted Kubernetes Service with what endpoint conversion
// needs from it.
type service struct {
	svc *registry.Service
	// externalName is the DNS name of an ExternalName service; its only
	// endpoint, one per port.
	externalName string
	// publishNotReady: every endpoint is Healthy
	// (spec.publishNotReadyAddresses).
	publishNotReady bool
	// ports by Service port name, the name EndpointSlice ports carry.
	ports map[string]registry.Port
}

// exportToAnnotation is Istio's annotation of a Service listing the
// namespaces it is visible to, comma-separated (".", "*", "~" or names).
const exportToAnnotation = "networking.istio.io/exportTo"

// trafficDistributionAnnotation is Istio's annotation of a Service that
// stands for spec.trafficDistribution where the field is not set.
const trafficDistributionAnnotation = "networking.istio.io/traffic-distribution"

// convertService turns a Kubernetes Service into a mesh service:
// host <name>.<ns>.svc.<suffix>, its TCP ports with their protocols (see
// portProtocol) and numeric target ports. ClusterIP and headless
// (clusterIP: None) services are alike in the mesh: their endpoints, from
// EndpointSlices, are pod addresses that proxies balance across. An
// ExternalName service's endpoint is its external DNS name on each port,
// resolved by the proxies (resolution DNS: a STRICT_DNS cluster), as
// Istio models it.
// A ClusterIP service's cluster IPs are its Addresses (see clusterIPs).
func convertService(s *corev1.Service, domainSuffix string) *service {
	out := &service{
		svc: &registry.Service{
			Hostname:  ServiceHostname(s.Name, s.Namespace, domainSuffix),
			Namespace: s.Namespace,
			Source:    SourceName,
		},
		publishNotReady: s.Spec.PublishNotReadyAddresses,
		ports:           make(map[string]registry.Port, len(s.Spec.Ports)),
	}
	if v, ok := s.Annotations[exportToAnnotation]; ok {
		var to []string
		for _, e := range strings.Split(v, ",") {
			if e = strings.TrimSpace(e); e != "" {
				to = append(to, e)
			}
		}
		out.svc.ExportTo = registry.ResolveExportTo(to, s.Namespace)
	}
	// As Istio's GetTrafficDistribution: the field, else the annotation.
	if td := s.Spec.TrafficDistribution; td != nil {
		out.svc.TrafficDistribution = registry.ParseTrafficDistribution(*td)
	} else if v, ok := s.Annotations[trafficDistributionAnnotation]; ok {
		out.svc.TrafficDistribution = registry.ParseTrafficDistribution(v)
	}
	if s.Spec.Type == corev1.ServiceTypeExternalName {
		out.externalName = strings.TrimSuffix(s.Spec.ExternalName, ".")
		out.svc.Resolution = registry.DNS
	} else {
		if len(s.Spec.Selector) > 0 {
			out.svc.Selector = maps.Clone(s.Spec.Selector)
		}
		out.svc.Addresses = clusterIPs(s)
	}
	for _, p := range s.Spec.Ports {
		proto, ok := portProtocol(p)
		if !ok || p.Port <= 0 {
			continue
		}
		rp := registry.Port{Name: p.Name, Number: uint32(p.Port), Protocol: proto}
		if p.TargetPort.IntVal > 0 && p.TargetPort.StrVal == "" {
			rp.TargetPort = uint32(p.TargetPort.IntVal)
		}
		rp.TargetPortName = p.TargetPort.StrVal
		out.svc.Ports = append(out.svc.Ports, rp)
		out.ports[p.Name] = rp
	}
	return out
}

// clusterIPs are a Service's virtual IPs: spec.clusterIPs (dual-stack),
// else spec.clusterIP; none for a headless service ("None"), whose pods
// are reached by their own addresses. Unparseable values are skipped (the
// API server validates them; a bad one must not drop the service).
func clusterIPs(s *corev1.Service) []netip.Addr {
	ips := s.Spec.ClusterIPs
	if len(ips) == 0 && s.Spec.ClusterIP != "" {
		ips = []string{s.Spec.ClusterIP}
	}
	var out []netip.Addr
	for _, ip := range ips {
		if ip == corev1.ClusterIPNone {
			return nil
		}
		if a, err := netip.ParseAddr(ip); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// externalEndpoints are an ExternalName service's endpoints: its DNS name
// on every service port (ExternalName services ignore target ports).
func (s *service) externalEndpoints() []*registry.Endpoint {
	if s.externalName == "" {
		return nil
	}
	out := make([]*registry.Endpoint, 0, len(s.svc.Ports))
	for _, p := range s.svc.Ports {
		out = append(out, &registry.Endpoint{
			ServiceHostname: s.svc.Hostname,
			ServicePort:     p.Number,
			Address:         s.externalName,
			Port:            p.Number,
			Namespace:       s.svc.Namespace,
			WorkloadName:    s.externalName,
			Health:          registry.Healthy,
		})
	}
	return out
}

// endpointHealth maps an EndpointSlice endpoint's conditions, read as the
// discovery API defines them (ready and serving default to true,
// terminating to false):
//
//	ready (or the service publishes not-ready addresses) → Healthy
//	not ready, serving, terminating                       → Draining
//	not ready, not serving, terminating                   → left out (ok false)
//	not ready, not terminating                            → Unhealthy
//
// Draining endpoints get no new requests but finish what they have, as
// Envoy's DRAINING; a terminating endpoint that no longer serves is
// gone, as Istio leaves terminating endpoints out of EDS.
func endpointHealth(c discoveryv1.EndpointConditions, publishNotReady bool) (h registry.Health, ok bool) {
	ready := c.Ready == nil || *c.Ready
	serving := c.Serving == nil || *c.Serving
	terminating := c.Terminating != nil && *c.Terminating
	switch {
	case ready || publishNotReady:
		return registry.Healthy, true
	case terminating && serving:
		return registry.Draining, true
	case terminating:
		return 0, false
	}
	return registry.Unhealthy, true
}

// pod is what endpoints and workloads take from a Kubernetes Pod.
type pod struct {
	name, namespace string
	ip              string
	nodeName        string
	serviceAccount  string
	workloadName    string
	// localityLabel is the Pod's topology.istio.io/locality (or
	// istio-locality) label turned into region/zone/subzone, "" if unset.
	localityLabel string
	// region, zone, subzone from the Pod's Node.
	region, zone, subzone string
	// rawLabels are the Pod's own labels; labels adds the topology labels
	// Istio adds (region, zone, subzone, kubernetes.io/hostname).
	rawLabels, labels map[string]string
	ports             map[string]uint32
	ready             bool
	terminating       bool
	terminal          bool
	// wl is the Pod as a workload; nil for none (see workload).
	wl *registry.Workload
}

// convertPod reads a Pod; node, when non-nil, is its Node (for locality).
func convertPod(p *corev1.Pod, node *corev1.Node) *pod {
	out := &pod{
		name:           p.Name,
		namespace:      p.Namespace,
		ip:             p.Status.PodIP,
		nodeName:       p.Spec.NodeName,
		serviceAccount: p.Spec.ServiceAccountName,
		workloadName:   workloadName(p),
		rawLabels:      p.Labels,
		ports:          containerPorts(p),
		ready:          podReady(p),
		terminating:    p.DeletionTimestamp != nil,
		terminal:       p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed,
	}
	if out.ip == "" && len(p.Status.PodIPs) > 0 {
		out.ip = p.Status.PodIPs[0].IP
	}
	if out.serviceAccount == "" {
		out.serviceAccount = "default"
	}
	if l := p.Labels[labelLocality]; l != "" {
		out.localityLabel = sanitizeLocality(l)
	} else if l := p.Labels[labelLocalityOld]; l != "" {
		out.localityLabel = sanitizeLocality(l)
	}
	if node != nil {
		out.region, out.zone, out.subzone = node.Labels[labelRegion], node.Labels[labelZone], node.Labels[labelSubzone]
	}
	out.labels = topologyLabels(p.Labels, out.locality(""), out.nodeName)
	out.wl = out.workload()
	return out
}

// locality is the pod's "region/zone/subzone": its locality label if it
// has one, else its Node's region and subzone with zone (the
// EndpointSlice endpoint's zone when given, else the Node's). "" when
// nothing is known.
func (p *pod) locality(zone string) string {
	if p.localityLabel != "" {
		return p.localityLabel
	}
	if zone == "" {
		zone = p.zone
	}
	return joinLocality(p.region, zone, p.subzone)
}

func joinLocality(region, zone, subzone string) string {
	if region == "" && zone == "" && subzone == "" {
		return ""
	}
	return region + "/" + zone + "/" + subzone
}

// sanitizeLocality turns a locality label value ("us-east.us-east-1a")
// into "region/zone/subzone" form; a value with "/" is kept.
func sanitizeLocality(l string) string {
	if strings.Contains(l, "/") {
		return l
	}
	return strings.ReplaceAll(l, ".", "/")
}

// topologyLabels returns in plus the labels Istio adds to every Kubernetes
// endpoint: topology.kubernetes.io/region and /zone and
// topology.istio.io/subzone from the locality, kubernetes.io/hostname from
// the node, so subsets can select by them. in is not modified.
func topologyLabels(in map[string]string, locality, node string) map[string]string {
	out := make(map[string]string, len(in)+4)
	maps.Copy(out, in)
	f := strings.SplitN(locality, "/", 3)
	f = append(f, "", "", "")
	for i, k := range []string{labelRegion, labelZone, labelSubzone} {
		if f[i] != "" {
			out[k] = f[i]
		}
	}
	if node != "" {
		out[labelHostname] = node
	}
	return out
}

// workloadName is the name of the workload a Pod belongs to, as Istio
// derives it: the service.istio.io/workload-name label, else for a
// generated Pod its controller's name with a ReplicaSet's
// pod-template-hash suffix removed (the Deployment's name), else the
// Pod's name.
func workloadName(p *corev1.Pod) string {
	if n := p.Labels[labelWorkloadName]; n != "" {
		return n
	}
	if p.GenerateName == "" {
		return p.Name
	}
	for _, ref := range p.OwnerReferences {
		if ref.Controller == nil || !*ref.Controller {
			continue
		}
		if ref.Kind == "ReplicaSet" {
			if h := p.Labels[labelPodTemplate]; h != "" && strings.HasSuffix(ref.Name, "-"+h) {
				return strings.TrimSuffix(ref.Name, "-"+h)
			}
		}
		if ref.Name != "" {
			return ref.Name
		}
	}
	return p.Name
}

// containerPorts maps the Pod's named TCP container ports (and those of
// its native sidecars) to their numbers, the first of a name winning, as
// Kubernetes resolves a named targetPort.
func containerPorts(p *corev1.Pod) map[string]uint32 {
	out := map[string]uint32{}
	add := func(cs []corev1.Container, sidecarsOnly bool) {
		for _, c := range cs {
			if sidecarsOnly && (c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways) {
				continue
			}
			for _, port := range c.Ports {
				if port.Name == "" || (port.Protocol != "" && port.Protocol != corev1.ProtocolTCP) {
					continue
				}
				if _, dup := out[port.Name]; !dup {
					out[port.Name] = uint32(port.ContainerPort)
				}
			}
		}
	}
	add(p.Spec.Containers, false)
	add(p.Spec.InitContainers, true)
	if len(out) == 0 {
		return nil
	}
	return out
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// workload is the Pod as a registry.Workload a ServiceEntry's
// workloadSelector may select; nil for a Pod without an IP or one that
// has finished (Succeeded, Failed). Health: Ready → Healthy; Ready but
// being deleted → Draining; otherwise Unhealthy.
func (p *pod) workload() *registry.Workload {
	if p.ip == "" || p.terminal {
		return nil
	}
	h := registry.Unhealthy
	switch {
	case p.ready && p.terminating:
		h = registry.Draining
	case p.ready:
		h = registry.Healthy
	}
	return &registry.Workload{
		Name:           p.name,
		Namespace:      p.namespace,
		Address:        p.ip,
		Labels:         p.labels,
		ServiceAccount: p.serviceAccount,
		Locality:       p.locality(""),
		Health:         h,
		Source:         SourceName,
		Ports:          p.ports,
		WorkloadName:   p.workloadName,
	}
}

// podRelevantChange reports whether a Pod update changes anything the
// registry takes from it; status churn (container restarts, probes'
// timestamps) does not rebuild anything.
func podRelevantChange(a, b *corev1.Pod) bool {
	if a.ResourceVersion == b.ResourceVersion {
		return false
	}
	return a.Status.PodIP != b.Status.PodIP ||
		len(a.Status.PodIPs) != len(b.Status.PodIPs) ||
		a.Spec.NodeName != b.Spec.NodeName ||
		a.Spec.ServiceAccountName != b.Spec.ServiceAccountName ||
		a.Status.Phase != b.Status.Phase ||
		(a.DeletionTimestamp == nil) != (b.DeletionTimestamp == nil) ||
		podReady(a) != podReady(b) ||
		!maps.Equal(a.Labels, b.Labels) ||
		!maps.Equal(containerPorts(a), containerPorts(b))
}

// nodeRelevantChange reports whether a Node update changes its locality;
// Nodes' frequent status updates do not rebuild anything.
func nodeRelevantChange(a, b *corev1.Node) bool {
	for _, k := range []string{labelRegion, labelZone, labelSubzone} {
		if a.Labels[k] != b.Labels[k] {
			return true
		}
	}
	return false
}
