package registries

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"weft.dev/weft/internal/testenv"
)

// consulService writes a service definition into the agent's config
// directory, so the agent registers it at every start (as a VM's agent
// does), and reloads nothing: call it before the agent starts or Restart.
func consulService(t *testing.T, c *testenv.ConsulEnv, id, name, addr string, port int, tags []string, meta map[string]string) {
	t.Helper()
	def := map[string]any{"service": map[string]any{
		"id": id, "name": name, "address": addr, "port": port, "tags": tags, "meta": meta,
	}}
	b, _ := json.Marshal(def)
	if err := os.WriteFile(filepath.Join(c.ConfigDir, id+".json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// echoReply is what `weft echo` answers.
type echoReply struct {
	Name, Version string
}

func reply(body string) (echoReply, error) {
	var r echoReply
	err := json.Unmarshal([]byte(body), &r)
	if err == nil && r.Name == "" {
		err = fmt.Errorf("not an echo reply: %s", body)
	}
	return r, err
}

// TestConsulMesh: services registered in Consul — two on one VM process on
// different ports, a second VM with another version — are reachable by
// mesh host and by their short alias through a sidecar, with subsets by
// Consul tag; a Consul agent restart keeps traffic flowing (0 failed
// requests) and /status reports the registry.
func TestConsulMesh(t *testing.T) {
	bin := binaries(t)
	c := testenv.Consul(t)
	n := testenv.NewNetwork(t)
	vm1, vm2, client := n.Netns(t, "vm1"), n.Netns(t, "vm2"), n.Netns(t, "client")

	consulService(t, c, "order-vm1", "order", vm1.IP, 8080, []string{"version=v1"}, map[string]string{"protocol": "http"})
	consulService(t, c, "payment-vm1", "payment", vm1.IP, 8081, []string{"version=v1"}, map[string]string{"protocol": "http"})
	consulService(t, c, "order-vm2", "order", vm2.IP, 8080, []string{"version=v2"}, map[string]string{"protocol": "http"})
	c.Restart() // registers the definitions

	cfg := t.TempDir()
	writeFile(t, filepath.Join(cfg, "order.yaml"), `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: order, namespace: default}
spec:
  host: order.service.consul
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: order, namespace: default}
spec:
  hosts: [order.service.consul]
  http:
  - match:
    - headers: {x-canary: {exact: "true"}}
    route:
    - destination: {host: order.service.consul, subset: v2}
  - route:
    - destination: {host: order.service.consul, subset: v1}
`)
	cp := serve(t, bin, n, "--config", cfg, "--consul", c.Addr)

	// One VM process serving two Consul services on two ports: one
	// sidecar, two apps.
	startWorkload(t, bin, cp, vm1, workloadSpec{Name: "order-v1", Namespace: "default", ServiceAccount: "order",
		Labels: "app=order,version=v1", Version: "v1", Port: 8080, TokenFile: cp.token(t, bin, "default", "order"),
		Extra: []string{"--app-port", "8081=127.0.0.1:18081"}})
	startCmd(t, "payment echo", vm1.Command(t.Context(), filepath.Join(bin, "weft"), "echo", "--name", "payment", "--version", "v1", "--address", "127.0.0.1:18081"))
	startWorkload(t, bin, cp, vm2, workloadSpec{Name: "order-v2", Namespace: "default", ServiceAccount: "order",
		Labels: "app=order,version=v2", Version: "v2", Port: 8080, TokenFile: cp.token(t, bin, "default", "order")})
	fe := startWorkload(t, bin, cp, client, workloadSpec{Name: "frontend", Namespace: "default", ServiceAccount: "frontend",
		Labels: "app=frontend", TokenFile: cp.token(t, bin, "default", "frontend")})

	hc := &http.Client{Timeout: 5 * time.Second}
	call := func(host string, headers map[string]string) (echoReply, error) {
		h := map[string]string{"Host": host}
		for k, v := range headers {
			h[k] = v
		}
		code, body, err := httpGet(hc, "http://"+fe.Out+"/", h)
		if err != nil {
			return echoReply{}, err
		}
		if code != 200 {
			return echoReply{}, fmt.Errorf("%s: %d %s", host, code, body)
		}
		return reply(body)
	}
	want := func(host string, headers map[string]string, name, version string) {
		t.Helper()
		eventually(t, 20*time.Second, host+" answers", func() error {
			r, err := call(host, headers)
			if err != nil {
				return err
			}
			if r.Name != name || r.Version != version {
				return fmt.Errorf("%s answered %s %s, want %s %s", host, r.Name, r.Version, name, version)
			}
			return nil
		})
	}
	want("order.service.consul:8080", nil, "order-v1", "v1")
	want("order.service.consul:8080", map[string]string{"x-canary": "true"}, "order-v2", "v2")
	want("order:8080", map[string]string{"x-canary": "true"}, "order-v2", "v2") // the short alias has the host's routes
	want("payment.service.consul:8081", nil, "payment", "v1")

	// The registry is on /status.
	code, body, err := httpGet(hc, "http://"+cp.Status+"/status", nil)
	if err != nil || code != 200 {
		t.Fatalf("/status: %d %v", code, err)
	}
	var st struct {
		Registries []struct {
			Name              string
			Synced, Connected bool
			Services          int
		}
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range st.Registries {
		if r.Name == "consul" {
			found = true
			if !r.Synced || !r.Connected || r.Services < 2 {
				t.Errorf("/status consul registry: %+v", r)
			}
		}
	}
	if !found {
		t.Errorf("/status lists no consul registry:\n%s", body)
	}

	// A Consul agent restart: the last known endpoints keep serving.
	var (
		ok, failed atomic.Int64
		stop       = make(chan struct{})
		wg         sync.WaitGroup
		firstErr   atomic.Value
	)
	wg.Go(func() {
		for i := 0; i < 20000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := call("order.service.consul:8080", nil); err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			} else {
				ok.Add(1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	time.Sleep(300 * time.Millisecond)
	c.Restart()
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Errorf("across a Consul agent restart: %d ok, %d failed (first: %v)", ok.Load(), failed.Load(), firstErr.Load())
	}
	t.Logf("across a Consul agent restart: %d requests, 0 failed", ok.Load())
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.TrimLeft(content, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
}
