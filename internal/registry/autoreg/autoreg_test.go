package autoreg

import (
	"context"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/xds/contract"
)

const group = `
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: order, namespace: shop}
spec:
  metadata:
    labels: {app: order, version: vm}
  template:
    serviceAccount: order-vm
    ports: {http: 8080}
`

func groups(t *testing.T, yaml string) *config.Snapshot {
	t.Helper()
	snap := config.NewStore(config.Options{}).Load(map[string][]byte{"wg.yaml": []byte(yaml)})
	for _, d := range snap.Diagnostics {
		t.Fatalf("config: %s", d.Error())
	}
	return snap
}

func vm(ip, sa string) contract.Identity {
	return contract.Identity{ID: "sidecar~" + ip + "~order-vm.shop~shop.svc.cluster.local", Namespace: "shop", ServiceAccount: sa,
		IPs: []string{ip}, Labels: map[string]string{"zone-label": "a"}, Locality: "eu/west", AutoRegisterGroup: "order"}
}

// TestRegisterAndExpire: a VM connecting with its group's name becomes a
// workload with the group's labels and ports and its own address; after
// it disconnects it stays for the grace period, then goes.
func TestRegisterAndExpire(t *testing.T) {
	r := New(Options{Grace: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	if r.Status().Synced {
		t.Error("synced before the first config")
	}
	r.SetGroups(groups(t, group))
	id := vm("10.9.0.5", "order-vm")
	r.Connect(id)
	<-r.Changed()
	ws := r.Snapshot().Workloads()
	if len(ws) != 1 {
		t.Fatalf("workloads = %d, want 1", len(ws))
	}
	w := ws[0]
	if w.Name != "order-10-9-0-5" || w.Namespace != "shop" || w.Address != "10.9.0.5" || w.ServiceAccount != "order-vm" ||
		w.Labels["app"] != "order" || w.Labels["version"] != "vm" || w.Labels["zone-label"] != "a" || w.Ports["http"] != 8080 ||
		w.Locality != "eu/west" || w.Source != Name {
		t.Errorf("workload = %+v", w)
	}

	r.Disconnect(id)
	if len(r.Snapshot().Workloads()) != 1 {
		t.Error("gone at once; want it kept for the grace period")
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(r.Snapshot().Workloads()) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("still registered 10s after disconnecting with a 100ms grace period")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReconnectWithinGrace keeps the workload without a change.
func TestReconnectWithinGrace(t *testing.T) {
	r := New(Options{Grace: time.Hour})
	r.SetGroups(groups(t, group))
	id := vm("10.9.0.6", "order-vm")
	r.Connect(id)
	<-r.Changed()
	r.Disconnect(id)
	r.Connect(id)
	select {
	case <-r.Changed():
		t.Error("a reconnect changed the registry")
	default:
	}
	if len(r.Snapshot().Workloads()) != 1 {
		t.Error("workload lost on reconnect")
	}
}

// TestRefused: a proxy of another service account, or naming a group that
// does not exist, is not registered, and Status says why; the group
// appearing later registers the waiting proxy.
func TestRefused(t *testing.T) {
	r := New(Options{})
	r.SetGroups(groups(t, group))
	r.Connect(vm("10.9.0.7", "intruder"))
	if n := len(r.Snapshot().Workloads()); n != 0 {
		t.Fatalf("registered a proxy of the wrong service account")
	}
	if st := r.Status(); !strings.Contains(st.LastError, `for service account "order-vm", the proxy is "intruder"`) {
		t.Errorf("status = %q", st.LastError)
	}

	other := vm("10.9.0.8", "pay")
	other.AutoRegisterGroup = "payment"
	r.Connect(other)
	if st := r.Status(); !strings.Contains(st.LastError, "WorkloadGroup shop/payment does not exist") {
		t.Errorf("status = %q", st.LastError)
	}
	r.SetGroups(groups(t, group+`---
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: payment, namespace: shop}
spec:
  template: {}
`))
	ws := r.Snapshot().Workloads()
	if len(ws) != 1 || ws[0].Address != "10.9.0.8" || ws[0].ServiceAccount != "pay" {
		t.Errorf("after the group appeared: %+v", ws)
	}
	// Removing the group unregisters its VMs.
	r.SetGroups(groups(t, group))
	if n := len(r.Snapshot().Workloads()); n != 0 {
		t.Errorf("workloads after the group was deleted = %d", n)
	}
}
