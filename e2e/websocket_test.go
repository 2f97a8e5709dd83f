package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"weft.dev/weft/internal/echo"
	"weft.dev/weft/internal/localmesh"
)

// wsDialVia opens a WebSocket to url over a TCP connection to addr (a
// sidecar's outbound listener, a gateway), retrying until the route is
// in place or 20 s have passed.
func wsDialVia(t *testing.T, addr, url string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{
		HandshakeTimeout: 5 * time.Second,
		NetDialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
		},
	}
	var c *websocket.Conn
	Eventually(t, 20*time.Second, "WebSocket handshake through "+addr, func() error {
		var resp *http.Response
		var err error
		c, resp, err = d.Dial(url, nil)
		if err != nil {
			if resp != nil {
				return fmt.Errorf("%w: %s", err, resp.Status)
			}
			return err
		}
		return nil
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// wsEcho sends n text messages on c and checks each comes back, then
// closes the WebSocket as RFC 6455 says: a close frame each way.
func wsEcho(t *testing.T, c *websocket.Conn, n int) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for i := range n {
		msg := "hello " + strconv.Itoa(i)
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if _, got, err := c.ReadMessage(); err != nil || string(got) != msg {
			t.Fatalf("message %d came back as %q, %v; want %q", i, got, err, msg)
		}
	}
	if err := c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("closing: %v; want the app's close frame", err)
	}
	c.Close()
}

// TestWebSocketMutualTLS: a WebSocket from a client app through its
// sidecar, over mutual TLS (STRICT) to the backend's sidecar, to the
// backend app's /ws echo. Both sidecars count it once, code 101, when it
// ends.
func TestWebSocketMutualTLS(t *testing.T) {
	m := NewMesh(t)
	backend := m.Service("backend", "HTTP", "v1")[0]
	client := m.Client("client")
	m.WriteConfig("peer-authn.yaml", peerAuthYAML("STRICT"))
	waitPlaintextRefused(t, inboundAddr(backend))

	c := wsDialVia(t, client.Outbound, "ws://backend"+echo.WebSocketPath)
	wsEcho(t, c, 50)

	srv := map[string]string{"reporter": "destination", "response_code": "101",
		"connection_security_policy": "mutual_tls", "source_principal": identity("client"), "destination_principal": identity("backend")}
	cli := map[string]string{"reporter": "source", "response_code": "101", "destination_principal": identity("backend")}
	Eventually(t, 10*time.Second, "istio_requests_total code 101 on both sidecars", func() error {
		if n, seen := series(t, client, "istio_requests_total", cli); n != 1 {
			return fmt.Errorf("client sidecar: %v, series %v", n, seen)
		}
		if n, seen := series(t, backend, "istio_requests_total", srv); n != 1 {
			return fmt.Errorf("backend sidecar: %v, series %v", n, seen)
		}
		return nil
	})
}

// TestWebSocketGateway: Istio's samples/websockets route.yaml (its
// Gateway and VirtualService, websocketUpgrade and all) on an ingress
// gateway: WebSockets reach the app through it.
func TestWebSocketGateway(t *testing.T) {
	m := NewMesh(t)
	m.Service("tornado", "HTTP", "v1")
	ip := nextIP()
	port, err := localmesh.FreePort(ip)
	if err != nil {
		t.Fatal(err)
	}
	m.WriteConfig("route.yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: tornado-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: %d
      name: http
      protocol: HTTP
    hosts:
    - "*"
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: tornado
spec:
  hosts:
  - "*"
  gateways:
  - tornado-gateway
  http:
  - match:
    - uri:
        prefix: /
    route:
    - destination:
        host: tornado
      weight: 100
    websocketUpgrade: true
`, port))
	m.gatewayAt("ingressgateway", "default", ip, map[string]string{"istio": "ingressgateway"})
	c := wsDialVia(t, net.JoinHostPort(ip, strconv.Itoa(port)), "ws://tornado.example.com"+echo.WebSocketPath)
	wsEcho(t, c, 20)
}
