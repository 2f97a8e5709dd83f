package e2e

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"weft.dev/weft/internal/echo"
)

const faultRoutes = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend]
  http:
  - name: delayed
    match: [{uri: {prefix: /slow}}]
    fault:
      delay: {fixedDelay: 100ms, percentage: {value: 50}}
    route: [{destination: {host: backend}}]
  - name: aborted
    fault:
      abort: {httpStatus: 418, percentage: {value: 10}}
    route: [{destination: {host: backend}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter, namespace: default}
spec:
  hosts: [greeter]
  http:
  - name: grpc-aborted
    fault:
      abort: {grpcStatus: UNAVAILABLE, percentage: {value: 10}}
    route: [{destination: {host: greeter}}]
`

// TestFaultAbortShare: an abort at 10% answers 10% ± 3 points of 2,000
// requests with the status, for HTTP and for gRPC (grpc-status
// UNAVAILABLE), marked FI; the rest reach the backends.
func TestFaultAbortShare(t *testing.T) {
	m := NewMesh(t)
	backends := m.Service("backend", "HTTP", "v1", "v1")
	greeters := m.Service("greeter", "GRPC", "v1")
	front := m.Client("frontend")
	c := newClient()
	m.WriteConfig("fault-routes.yaml", faultRoutes)
	waitDump(t, front, "grpc-aborted")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	const n = 2000
	before := totalRequests(backends)
	aborted := 0
	for i := 0; i < n; i++ {
		code, _, err := Get(ctx, c, front, "backend", "/", nil)
		switch {
		case err != nil:
			t.Fatalf("request %d: %v", i, err)
		case code == 418:
			aborted++
		case code != 200:
			t.Fatalf("request %d: code %d", i, code)
		}
	}
	if aborted < n*7/100 || aborted > n*13/100 {
		t.Errorf("HTTP: %d of %d aborted, want 10%% ± 3 points", aborted, n)
	}
	if got := totalRequests(backends) - before; got != uint64(n-aborted) {
		t.Errorf("backends saw %d requests, want the %d not aborted", got, n-aborted)
	}
	if got, _ := series(t, front, "istio_requests_total", map[string]string{"reporter": "source", "response_code": "418", "response_flags": "FI"}); got != float64(aborted) {
		t.Errorf("istio_requests_total{response_flags=FI} = %v, want %d", got, aborted)
	}

	cc := GRPCClient(t, front, "greeter")
	before = totalRequests(greeters)
	aborted = 0
	for i := 0; i < n; i++ {
		_, err := echo.Call(ctx, cc, &structpb.Struct{})
		switch status.Code(err) {
		case codes.OK:
		case codes.Unavailable:
			aborted++
		default:
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if aborted < n*7/100 || aborted > n*13/100 {
		t.Errorf("gRPC: %d of %d aborted with UNAVAILABLE, want 10%% ± 3 points", aborted, n)
	}
	if got := totalRequests(greeters) - before; got != uint64(n-aborted) {
		t.Errorf("greeter saw %d calls, want the %d not aborted (an injected abort is never retried)", got, n-aborted)
	}
	if got, _ := series(t, front, "istio_requests_total", map[string]string{"reporter": "source", "grpc_response_status": "14", "response_flags": "FI"}); got != float64(aborted) {
		t.Errorf("istio_requests_total{grpc_response_status=14,response_flags=FI} = %v, want %d", got, aborted)
	}
}

// TestFaultDelay: a 100ms delay on 50% of requests: about half the requests
// take at least 100ms, and those are the ones flagged DI.
func TestFaultDelay(t *testing.T) {
	m := NewMesh(t)
	m.Service("backend", "HTTP", "v1")
	front := m.Client("frontend")
	c := newClient()
	m.WriteConfig("fault-routes.yaml", faultRoutes)
	waitDump(t, front, "fixedDelay")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const n = 100
	slow := 0
	for i := 0; i < n; i++ {
		start := time.Now()
		code, _, err := Get(ctx, c, front, "backend", "/slow", nil)
		if err != nil || code != 200 {
			t.Fatalf("request %d: code %d err %v", i, code, err)
		}
		if time.Since(start) >= 100*time.Millisecond {
			slow++
		}
	}
	if slow < n*30/100 || slow > n*70/100 {
		t.Errorf("%d of %d requests took ≥ 100ms, want about half", slow, n)
	}
	delayed, _ := series(t, front, "istio_requests_total", map[string]string{"reporter": "source", "response_code": "200", "response_flags": "DI"})
	if delayed < float64(slow)-5 || delayed > float64(slow) {
		t.Errorf("istio_requests_total{response_flags=DI} = %v; %d requests were slow", delayed, slow)
	}
}
