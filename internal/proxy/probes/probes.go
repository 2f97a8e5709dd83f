// Package probes answers a pod's rewritten Kubernetes probes inside the
// sidecar. The injector (internal/inject) points the app containers'
// httpGet, tcpSocket and grpc probes at the proxy,
// /app-health/<container>/<readyz|livez|startupz> on port 15020, and passes
// the originals in WEFT_APP_PROBERS (the shape of Istio's
// ISTIO_KUBE_APP_PROBERS). The kubelet's probe then reaches the proxy —
// which traffic capture lets through — and the proxy performs the original
// probe against the app on 127.0.0.1 from its own UID, which capture does
// not redirect. The server also answers /healthz/ready with the proxy's
// own readiness, and /stats/prometheus with the proxy's metrics merged
// with the application's (metrics.go), as Istio's agent does on 15020.
//
// This package links no Kubernetes packages: weft-proxy stays lean.
package probes

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Env is the environment variable holding the probes.
const Env = "WEFT_APP_PROBERS"

// DefaultAddress is where the probes are served when Env is set.
const DefaultAddress = "0.0.0.0:15020"

// ReadyPath answers with the proxy's own readiness.
const ReadyPath = "/healthz/ready"

// Prober is one original probe, decoded from Env.
type Prober struct {
	HTTPGet *struct {
		Path        string `json:"path"`
		Port        int    `json:"port"`
		Host        string `json:"host"`
		Scheme      string `json:"scheme"`
		HTTPHeaders []struct {
			Name  string `json:"name"`
			Value string `json:"value"`
		} `json:"httpHeaders"`
	} `json:"httpGet"`
	TCPSocket *struct {
		Host string `json:"host"`
		Port int    `json:"port"`
	} `json:"tcpSocket"`
	GRPC *struct {
		Port    int     `json:"port"`
		Service *string `json:"service"`
	} `json:"grpc"`
	TimeoutSeconds int `json:"timeoutSeconds"`
}

// Parse decodes Env's value: a JSON object from "/app-health/<container>/
// <kind>" to Prober. Every entry must have exactly one of httpGet,
// tcpSocket and grpc with a port in 1-65535; errors name the path.
func Parse(s string) (map[string]Prober, error) {
	var m map[string]Prober
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, fmt.Errorf("%s: not a JSON object of probes: %w", Env, err)
	}
	for path, p := range m {
		if !strings.HasPrefix(path, "/app-health/") {
			return nil, fmt.Errorf("%s: %q: paths start with /app-health/", Env, path)
		}
		n, port := 0, 0
		if p.HTTPGet != nil {
			n, port = n+1, p.HTTPGet.Port
			switch strings.ToUpper(p.HTTPGet.Scheme) {
			case "", "HTTP", "HTTPS":
			default:
				return nil, fmt.Errorf("%s: %s: scheme %q: want HTTP or HTTPS", Env, path, p.HTTPGet.Scheme)
			}
		}
		if p.TCPSocket != nil {
			n, port = n+1, p.TCPSocket.Port
		}
		if p.GRPC != nil {
			n, port = n+1, p.GRPC.Port
		}
		if n != 1 {
			return nil, fmt.Errorf("%s: %s: want exactly one of httpGet, tcpSocket and grpc", Env, path)
		}
		if port < 1 || port > 65535 {
			return nil, fmt.Errorf("%s: %s: port %d is out of range", Env, path, port)
		}
	}
	return m, nil
}

// Handler serves the probes: each path of probers runs its probe against
// the app (200 when it succeeds; the app's status code, or 503 when the
// app cannot be reached, when it fails); ReadyPath asks the proxy admin
// at admin ("http://host:port") for its /ready and answers like it;
// MetricsPath answers the admin's metrics followed by the app's (app,
// when set: merged metrics, metrics.go). Unknown paths are 404.
func Handler(probers map[string]Prober, admin string, app *AppMetrics, log *slog.Logger) http.Handler {
	readyURL := admin + "/ready"
	plain := &http.Client{
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true,
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, // as the kubelet: probes do not verify certificates
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			return nil
		},
	}
	mux := http.NewServeMux()
	mux.HandleFunc(ReadyPath, func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		code, err := httpGet(ctx, plain, readyURL, "", nil)
		if err != nil {
			http.Error(w, "proxy admin: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(code)
	})
	mux.Handle(MetricsPath, mergedMetrics(plain, admin+MetricsPath, app, log))
	for path, p := range probers {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			timeout := time.Duration(p.TimeoutSeconds) * time.Second
			if timeout <= 0 {
				timeout = time.Second // Kubernetes' default timeoutSeconds
			}
			ctx, cancel := context.WithTimeout(r.Context(), timeout)
			defer cancel()
			code, err := run(ctx, plain, p)
			if err != nil {
				log.Debug("application probe failed", "path", path, "error", err)
				if code == 0 {
					code = http.StatusServiceUnavailable
				}
				http.Error(w, err.Error(), code)
				return
			}
			w.WriteHeader(http.StatusOK)
		})
	}
	return mux
}

func hostPort(host string, port int) string {
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

func run(ctx context.Context, c *http.Client, p Prober) (int, error) {
	switch {
	case p.HTTPGet != nil:
		h := p.HTTPGet
		scheme := strings.ToLower(h.Scheme)
		if scheme == "" {
			scheme = "http"
		}
		path := h.Path
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		hdr := http.Header{}
		host := ""
		for _, x := range h.HTTPHeaders {
			if strings.EqualFold(x.Name, "Host") {
				host = x.Value
				continue
			}
			hdr.Add(x.Name, x.Value)
		}
		code, err := httpGet(ctx, c, scheme+"://"+hostPort(h.Host, h.Port)+path, host, hdr)
		if err != nil {
			return 0, err
		}
		if code < 200 || code >= 400 {
			return code, fmt.Errorf("the app answered %d", code)
		}
		return code, nil
	case p.TCPSocket != nil:
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", hostPort(p.TCPSocket.Host, p.TCPSocket.Port))
		if err != nil {
			return 0, err
		}
		return http.StatusOK, conn.Close()
	case p.GRPC != nil:
		conn, err := grpc.NewClient(hostPort("", p.GRPC.Port), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return 0, err
		}
		defer conn.Close()
		req := &healthpb.HealthCheckRequest{}
		if p.GRPC.Service != nil {
			req.Service = *p.GRPC.Service
		}
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, req)
		if err != nil {
			return 0, fmt.Errorf("grpc health check: %w", err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return http.StatusServiceUnavailable, fmt.Errorf("grpc health check: %s", resp.GetStatus())
		}
		return http.StatusOK, nil
	}
	return 0, errors.New("empty probe")
}

func httpGet(ctx context.Context, c *http.Client, url, host string, hdr http.Header) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "weft-proxy-probe")
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 10<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Serve serves h on ln until ctx is done.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err // the goroutine above ends with ctx
	}
	<-done
	return nil
}
