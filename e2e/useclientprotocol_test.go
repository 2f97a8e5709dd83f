package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/internal/echo"
	"weft.dev/weft/internal/localmesh"
)

const useClientProtocolRule = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: default}
spec:
  host: web
  trafficPolicy:
    connectionPool:
      http: {useClientProtocol: true}
`

// protoClient returns a client speaking HTTP/1.1, or h2c with prior
// knowledge, with bounded timeouts.
func protoClient(t *testing.T, h2c bool) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 8, DialContext: (&net.Dialer{Timeout: time.Second}).DialContext}
	if h2c {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Timeout: 5 * time.Second, Transport: tr}
}

// sendProto sends one request (a POST with a body when body is not empty)
// through w's outbound listener and returns the echo's reply.
func sendProto(ctx context.Context, c *http.Client, w *localmesh.Workload, host, body string) (echo.Reply, error) {
	method, rd := http.MethodGet, io.Reader(nil)
	if body != "" {
		method, rd = http.MethodPost, strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+w.Outbound+"/proto", rd)
	if err != nil {
		return echo.Reply{}, err
	}
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		return echo.Reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return echo.Reply{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return echo.Reply{}, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	var r echo.Reply
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("decoding %q: %w", b, err)
	}
	return r, nil
}

// TestUseClientProtocol: an HTTP port is served HTTP/1.1 upstream whatever
// the client speaks; with DestinationRule connectionPool.http
// useClientProtocol: true, an h2c client's requests reach the backend as
// HTTP/2 and an HTTP/1.1 client's as HTTP/1.1, through both sidecars.
func TestUseClientProtocol(t *testing.T) {
	m := NewMesh(t)
	m.Service("web", "HTTP", "v1")
	front := m.Client("frontend")
	h1, h2 := protoClient(t, false), protoClient(t, true)
	waitVersion(t, h1, front, "web", nil, "v1")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Without the rule the HTTP port is pinned to HTTP/1.1.
	if r, err := sendProto(ctx, h2, front, "web", ""); err != nil || r.Proto != "HTTP/1.1" {
		t.Fatalf("before the rule, h2c client: proto %q, err %v; want HTTP/1.1", r.Proto, err)
	}

	m.WriteConfig("web-rule.yaml", useClientProtocolRule)
	const cluster = "outbound|8080||web.default.svc.cluster.local"
	Eventually(t, 10*time.Second, "use_downstream_protocol_config in frontend's config", func() error {
		po, _ := clusterDump(t, front, cluster)["typedExtensionProtocolOptions"].(map[string]any)
		opts, _ := po["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].(map[string]any)
		ud, _ := opts["useDownstreamProtocolConfig"].(map[string]any)
		if ud["httpProtocolOptions"] == nil || ud["http2ProtocolOptions"] == nil {
			return fmt.Errorf("typedExtensionProtocolOptions = %v", po)
		}
		return nil
	})
	// The backend's sidecar applies the rule to its inbound cluster too,
	// possibly a moment later.
	Eventually(t, 10*time.Second, "h2c end to end", func() error {
		r, err := sendProto(ctx, h2, front, "web", "")
		if err != nil {
			return err
		}
		if r.Proto != "HTTP/2.0" {
			return fmt.Errorf("echo saw %s", r.Proto)
		}
		return nil
	})

	tests := []struct {
		name   string
		client *http.Client
		body   string
		want   string
	}{
		{"HTTP/1.1 GET", h1, "", "HTTP/1.1"},
		{"HTTP/1.1 POST", h1, "hello", "HTTP/1.1"},
		{"h2c GET", h2, "", "HTTP/2.0"},
		{"h2c POST", h2, "hello", "HTTP/2.0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for i := range 50 {
				r, err := sendProto(ctx, tc.client, front, "web", tc.body)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				if r.Proto != tc.want || r.BodyBytes != int64(len(tc.body)) {
					t.Fatalf("request %d: echo saw %s with %d body bytes, want %s with %d", i, r.Proto, r.BodyBytes, tc.want, len(tc.body))
				}
			}
		})
	}
}
