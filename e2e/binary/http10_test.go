package binary

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestHTTP10Binaries: built sidecars answer an HTTP/1.0 request as Envoy
// and Istio do — 426 Upgrade Required — unless started with --http10
// (or ISTIO_META_HTTP10=1), which the control plane turns into
// accept_http_10 on their listeners: then the app answers. Real
// traffic through `weft serve` and two `weft-proxy` inbound listeners.
func TestHTTP10Binaries(t *testing.T) {
	bin := binaries(t)
	pre := newPrefix()
	app, err := net.Listen("tcp", pre+"5:18080")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "app saw "+r.Proto)
	})}
	go srv.Serve(app)
	t.Cleanup(func() { srv.Close() })

	sidecar := inboundMesh(t, bin, pre, [2]string{"off", "2"}, [2]string{"env", "3"}, [2]string{"on", "4"})
	sidecar("off")
	t.Setenv("ISTIO_META_HTTP10", "1") // for the next sidecar only: start reads the environment now
	sidecar("env")
	t.Setenv("ISTIO_META_HTTP10", "")
	sidecar("on", "--http10")

	status := func(ip string) (string, error) {
		c, err := net.DialTimeout("tcp", ip+":8080", 5*time.Second)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET / HTTP/1.0\r\nHost: svc.default.svc.cluster.local\r\n\r\n")
		b, err := io.ReadAll(bufio.NewReader(c)) // HTTP/1.0: the connection closes after the answer
		s := string(b)
		if i := strings.Index(s, "\r\n"); i >= 0 {
			s = s[:i] + " | " + s[strings.LastIndex(s, "\n")+1:]
		}
		return s, err
	}
	for _, tc := range []struct{ name, ip, want string }{
		{"without --http10", pre + "2", "HTTP/1.1 426 Upgrade Required | "},
		{"ISTIO_META_HTTP10=1", pre + "3", "HTTP/1.1 200 OK | app saw HTTP/1.1"},
		{"--http10", pre + "4", "HTTP/1.1 200 OK | app saw HTTP/1.1"},
	} {
		eventually(t, 30*time.Second, tc.name, func() error {
			got, err := status(tc.ip)
			if err != nil || got != tc.want {
				return fmt.Errorf("%s: HTTP/1.0 answered %q (%v), want %q", tc.name, got, err, tc.want)
			}
			return nil
		})
	}
}
