package kube

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"

	"weft.dev/weft/internal/registry"
)

// Index names on the informers' stores.
const (
	// indexService indexes EndpointSlices by "<ns>/<service name>".
	indexService = "service"
	// indexIP indexes Pods by IP, for EndpointSlice endpoints without a
	// targetRef.
	indexIP = "ip"
	// indexNode indexes Pods by spec.nodeName, so a Node's new zone
	// relocates only its Pods.
	indexNode = "node"
)

func sliceServiceIndex(obj any) ([]string, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	name := s.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return nil, nil
	}
	return []string{s.Namespace + "/" + name}, nil
}

func podIPIndex(obj any) ([]string, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return nil, nil
	}
	var out []string
	if p.Status.PodIP != "" {
		out = append(out, p.Status.PodIP)
	}
	for _, ip := range p.Status.PodIPs {
		if ip.IP != "" && ip.IP != p.Status.PodIP {
			out = append(out, ip.IP)
		}
	}
	return out, nil
}

func podNodeIndex(obj any) ([]string, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok || p.Spec.NodeName == "" {
		return nil, nil
	}
	return []string{p.Spec.NodeName}, nil
}

// store is one kind's informer stores: one for all namespaces (key "") or
// one per watched namespace.
type store map[string]cache.Indexer

func (s store) indexer(ns string) cache.Indexer {
	if i, ok := s[""]; ok {
		return i
	}
	return s[ns]
}

func (s store) get(ns, name string) any {
	i := s.indexer(ns)
	if i == nil {
		return nil
	}
	key := name
	if ns != "" {
		key = ns + "/" + name
	}
	obj, ok, err := i.GetByKey(key)
	if err != nil || !ok {
		return nil
	}
	return obj
}

func (s store) byIndex(ns, index, value string) []any {
	i := s.indexer(ns)
	if i == nil {
		return nil
	}
	out, err := i.ByIndex(index, value)
	if err != nil {
		return nil
	}
	return out
}

// byIndexAll looks value up in every namespace's store.
func (s store) byIndexAll(index, value string) []any {
	var out []any
	for _, i := range s {
		objs, err := i.ByIndex(index, value)
		if err == nil {
			out = append(out, objs...)
		}
	}
	return out
}

func (s store) keys() []string {
	var out []string
	for _, i := range s {
		out = append(out, i.ListKeys()...)
	}
	return out
}

// stores are the informers' stores the builder reads.
type stores struct {
	services, slices, pods, nodes, namespaces store
}

// dirty is what changed since the last build: services and pods by
// "<ns>/<name>", nodes by name; all redoes everything.
type dirty struct {
	all      bool
	services map[string]bool
	pods     map[string]bool
	nodes    map[string]bool
}

func newDirty() *dirty {
	return &dirty{services: map[string]bool{}, pods: map[string]bool{}, nodes: map[string]bool{}}
}

func (d *dirty) empty() bool {
	return !d.all && len(d.services) == 0 && len(d.pods) == 0 && len(d.nodes) == 0
}

// builder turns the informers' stores into registry contents,
// incrementally: it keeps each Service's conversion (service and
// endpoints) and each Pod's, and redoes only those a change touched. It
// is used by one goroutine at a time.
type builder struct {
	st           stores
	domainSuffix string
	// nsSelector, when non-nil, keeps only namespaces whose labels match.
	nsSelector labels.Selector

	svcs map[string]*builtService // by service key
	pods map[string]*pod          // by pod key
	// podServices: the services whose endpoints used a pod (by key), or,
	// for endpoints without a targetRef, an IP ("ip:" prefix) and a node
	// ("node:" prefix), so a pod or node change rebuilds them.
	podServices map[string]map[string]bool
}

type builtService struct {
	svc       *registry.Service
	endpoints []*registry.Endpoint
	// uses are the podServices keys this service was recorded under.
	uses []string
}

func newBuilder(domainSuffix string) *builder {
	return &builder{
		domainSuffix: domainSuffix,
		svcs:         map[string]*builtService{},
		pods:         map[string]*pod{},
		podServices:  map[string]map[string]bool{},
	}
}

// namespaceAllowed applies the namespace selector.
func (b *builder) namespaceAllowed(ns string) bool {
	if b.nsSelector == nil {
		return true
	}
	obj, _ := b.st.namespaces.get("", ns).(*corev1.Namespace)
	return obj != nil && b.nsSelector.Matches(labels.Set(obj.Labels))
}

func (b *builder) node(name string) *corev1.Node {
	if name == "" {
		return nil
	}
	n, _ := b.st.nodes.get("", name).(*corev1.Node)
	return n
}

// build applies d and returns the registry's whole contents.
func (b *builder) build(d *dirty) registry.Contents {
	if d.all {
		b.svcs = map[string]*builtService{}
		b.pods = map[string]*pod{}
		b.podServices = map[string]map[string]bool{}
		for _, k := range b.st.pods.keys() {
			d.pods[k] = true
		}
		for _, k := range b.st.services.keys() {
			d.services[k] = true
		}
	}
	for name := range d.nodes {
		for _, obj := range b.st.pods.byIndexAll(indexNode, name) {
			if p, _ := obj.(*corev1.Pod); p != nil {
				d.pods[p.Namespace+"/"+p.Name] = true
			}
		}
		for s := range b.podServices["node:"+name] {
			d.services[s] = true
		}
	}
	for key := range d.pods {
		old := b.pods[key]
		ns, name, _ := cache.SplitMetaNamespaceKey(key)
		p, _ := b.st.pods.get(ns, name).(*corev1.Pod)
		if p == nil || !b.namespaceAllowed(ns) {
			delete(b.pods, key)
		} else {
			b.pods[key] = convertPod(p, b.node(p.Spec.NodeName))
		}
		for s := range b.podServices[key] {
			d.services[s] = true
		}
		for _, pp := range []*pod{old, b.pods[key]} { // endpoints found by the old or new IP
			if pp != nil && pp.ip != "" {
				for s := range b.podServices["ip:"+pp.ip] {
					d.services[s] = true
				}
			}
		}
	}
	for key := range d.services {
		b.buildService(key)
	}
	return b.contents()
}

// buildService reconverts one Service (key "<ns>/<name>") and its
// EndpointSlices' endpoints, or forgets it when it is gone or its
// namespace is not selected, and records which pods, IPs and nodes the
// result depends on.
func (b *builder) buildService(key string) {
	if old := b.svcs[key]; old != nil {
		for _, u := range old.uses {
			delete(b.podServices[u], key)
			if len(b.podServices[u]) == 0 {
				delete(b.podServices, u)
			}
		}
		delete(b.svcs, key)
	}
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	s, _ := b.st.services.get(ns, name).(*corev1.Service)
	if s == nil || !b.namespaceAllowed(ns) {
		return
	}
	conv := convertService(s, b.domainSuffix)
	built := &builtService{svc: conv.svc}
	if conv.externalName != "" {
		built.endpoints = conv.externalEndpoints()
		b.svcs[key] = built
		return
	}
	use := func(u string) {
		if b.podServices[u] == nil {
			b.podServices[u] = map[string]bool{}
		}
		if !b.podServices[u][key] {
			b.podServices[u][key] = true
			built.uses = append(built.uses, u)
		}
	}
	// Endpoints by (address, service port): an endpoint moving between
	// slices may briefly be in two; the healthier copy wins.
	type epKey struct {
		addr string
		port uint32
	}
	seen := map[epKey]*registry.Endpoint{}
	var eps []*registry.Endpoint
	for _, obj := range b.st.slices.byIndex(ns, indexService, key) {
		sl, _ := obj.(*discoveryv1.EndpointSlice)
		if sl == nil || sl.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		for _, e := range sl.Endpoints {
			health, ok := endpointHealth(e.Conditions, conv.publishNotReady)
			if !ok {
				continue
			}
			var zone string
			if e.Zone != nil {
				zone = *e.Zone
			}
			for _, addr := range e.Addresses {
				p, skip := b.endpointPod(ns, addr, e.TargetRef, use)
				if skip {
					continue
				}
				meta := b.endpointMeta(p, zone, e.NodeName, use)
				for _, sp := range sl.Ports {
					if sp.Port == nil || *sp.Port <= 0 || (sp.Protocol != nil && *sp.Protocol != corev1.ProtocolTCP) {
						continue
					}
					var pname string
					if sp.Name != nil {
						pname = *sp.Name
					}
					svcPort, ok := conv.ports[pname]
					if !ok {
						continue
					}
					ep := &registry.Endpoint{
						ServiceHostname: conv.svc.Hostname,
						ServicePort:     svcPort.Number,
						Address:         addr,
						Port:            uint32(*sp.Port),
						Labels:          meta.labels,
						Locality:        meta.locality,
						ServiceAccount:  meta.serviceAccount,
						WorkloadName:    meta.workloadName,
						Namespace:       ns,
						Health:          health,
					}
					k := epKey{addr, svcPort.Number}
					if prev, dup := seen[k]; dup {
						if healthRank(ep.Health) < healthRank(prev.Health) {
							*prev = *ep
						}
						continue
					}
					seen[k] = ep
					eps = append(eps, ep)
				}
			}
		}
	}
	built.endpoints = eps
	b.svcs[key] = built
}

// endpointPod finds the Pod behind an EndpointSlice address: by targetRef
// when it names a Pod (skip is true while that Pod is not known yet, as
// Istio waits for it: its labels decide subsets), else by IP. use records
// the dependency so the Pod's arrival or change rebuilds the service.
func (b *builder) endpointPod(ns, addr string, ref *corev1.ObjectReference, use func(string)) (p *pod, skip bool) {
	if ref != nil && ref.Kind == "Pod" {
		refNS := ref.Namespace
		if refNS == "" {
			refNS = ns
		}
		key := refNS + "/" + ref.Name
		use(key)
		p = b.pods[key]
		return p, p == nil
	}
	use("ip:" + addr)
	for _, obj := range b.st.pods.byIndex(ns, indexIP, addr) {
		if kp, _ := obj.(*corev1.Pod); kp != nil {
			if p = b.pods[kp.Namespace+"/"+kp.Name]; p != nil && !p.terminal {
				return p, false
			}
		}
	}
	return nil, false
}

type endpointMeta struct {
	labels                       map[string]string
	locality                     string
	serviceAccount, workloadName string
}

// endpointMeta is what an endpoint takes from its Pod (labels, service
// account, workload, locality), or, without a Pod, from its Node and
// zone.
func (b *builder) endpointMeta(p *pod, zone string, nodeName *string, use func(string)) endpointMeta {
	if p != nil {
		m := endpointMeta{labels: p.labels, locality: p.locality(zone), serviceAccount: p.serviceAccount, workloadName: p.workloadName}
		if m.locality != p.locality("") { // the slice knows another zone than the node: relabel
			m.labels = topologyLabels(p.rawLabels, m.locality, p.nodeName)
		}
		return m
	}
	var region, nodeZone, subzone, node string
	if nodeName != nil && *nodeName != "" {
		node = *nodeName
		use("node:" + node)
		if n := b.node(node); n != nil {
			region, nodeZone, subzone = n.Labels[labelRegion], n.Labels[labelZone], n.Labels[labelSubzone]
		}
	}
	if zone == "" {
		zone = nodeZone
	}
	loc := joinLocality(region, zone, subzone)
	return endpointMeta{labels: topologyLabels(nil, loc, node), locality: loc}
}

func healthRank(h registry.Health) int {
	switch h {
	case registry.Healthy:
		return 0
	case registry.Draining:
		return 1
	}
	return 2
}

// contents assembles the cached conversions, in no particular order:
// registry.New sorts them (hosts and namespace/name are unique here).
func (b *builder) contents() registry.Contents {
	var c registry.Contents
	for _, s := range b.svcs {
		c.Services = append(c.Services, s.svc)
		c.Endpoints = append(c.Endpoints, s.endpoints...)
	}
	for _, p := range b.pods {
		if p.wl != nil {
			c.Workloads = append(c.Workloads, p.wl)
		}
	}
	return c
}
