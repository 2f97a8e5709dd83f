package aggregate

import (
	"fmt"
	"testing"

	"weft.dev/weft/internal/registry"
)

// TestServiceSelectsOtherRegistriesWorkloads: a Kubernetes Service's
// selector picks WorkloadEntries and auto-registered VMs of its namespace
// (Istio's VM onboarding: the VM joins the Kubernetes Service), on the
// workload's port named like the service port or its named target port,
// else the target port; its own Pods and other namespaces' workloads are
// not added, nor an endpoint already there.
func TestServiceSelectsOtherRegistriesWorkloads(t *testing.T) {
	svc := &registry.Service{Hostname: "order.prod.svc.cluster.local", Namespace: "prod", Source: "kubernetes",
		Selector: map[string]string{"app": "order"},
		Ports: []registry.Port{
			{Name: "http", Number: 80, Protocol: registry.HTTP, TargetPort: 8080},
			{Name: "grpc", Number: 9090, Protocol: registry.GRPC, TargetPortName: "rpc"},
		}}
	pod := &registry.Endpoint{ServiceHostname: svc.Hostname, ServicePort: 80, Address: "10.0.0.1", Port: 8080, Namespace: "prod"}
	kube := registry.New(registry.Contents{Services: []*registry.Service{svc}, Endpoints: []*registry.Endpoint{pod},
		Workloads: []*registry.Workload{{Name: "order-pod", Namespace: "prod", Address: "10.0.0.1", Labels: map[string]string{"app": "order"}, Source: "kubernetes"}}})
	static := registry.New(registry.Contents{Workloads: []*registry.Workload{
		{Name: "order-we", Namespace: "prod", Address: "10.9.0.1", Labels: map[string]string{"app": "order", "version": "vm"},
			Ports: map[string]uint32{"rpc": 19090}, Source: "static"},
		{Name: "other-ns", Namespace: "dev", Address: "10.9.0.2", Labels: map[string]string{"app": "order"}, Source: "static"},
		{Name: "not-order", Namespace: "prod", Address: "10.9.0.3", Labels: map[string]string{"app": "pay"}, Source: "static"},
	}})
	vms := registry.New(registry.Contents{Workloads: []*registry.Workload{
		{Name: "order-10-9-0-4", Namespace: "prod", Address: "10.9.0.4", Labels: map[string]string{"app": "order"},
			Ports: map[string]uint32{"http": 18080}, Health: registry.Healthy, Source: "autoregistration"},
	}})
	snap, conflicts := Merge(Part{"static", static}, Part{"kubernetes", kube}, Part{"autoregistration", vms})
	if len(conflicts) != 0 {
		t.Errorf("conflicts: %v", conflicts)
	}
	got := map[string]uint32{}
	for _, ep := range snap.Endpoints(svc.Hostname, 0) {
		got[fmt.Sprintf("%s/%d", ep.Address, ep.ServicePort)] = ep.Port
	}
	want := map[string]uint32{
		"10.0.0.1/80":   8080,  // the Pod, from its EndpointSlice, once
		"10.9.0.1/80":   8080,  // the WorkloadEntry: the numeric target port
		"10.9.0.1/9090": 19090, // its port named like the named target port
		"10.9.0.4/80":   18080, // the VM: its port named like the service port
		"10.9.0.4/9090": 9090,  // no such port: the service port
	}
	if len(got) != len(want) {
		t.Errorf("endpoints = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("endpoint %s on port %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
}
