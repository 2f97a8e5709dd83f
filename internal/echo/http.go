package echo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Limits on the per-request controls; larger requests are clamped.
const (
	MaxDelay = 30 * time.Second
	MaxSize  = 16 << 20
)

// Reply is the JSON body of every HTTP response that is not an error about
// the request's controls.
type Reply struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Method  string `json:"method"`
	Path    string `json:"path"`
	// Query is the raw query string, without '?'.
	Query string `json:"query"`
	// URI is the request target as received (escapes kept).
	URI  string `json:"uri"`
	Host string `json:"host"`
	// Proto is "HTTP/1.1" or "HTTP/2.0".
	Proto string `json:"proto"`
	// Headers maps lower-cased request header names to their values, joined
	// by ", " when repeated.
	Headers map[string]string `json:"headers"`
	// BodyBytes is the size of the request body.
	BodyBytes int64 `json:"body_bytes"`
	// Pad fills the body up to the requested size.
	Pad string `json:"pad,omitempty"`
	// Upstream is the reply of the service the request asked this app to
	// call (control "call"), through its outbound proxy.
	Upstream *Reply `json:"upstream,omitempty"`
}

// controls are the per-request behaviours a client asked for.
type controls struct {
	status  int
	delay   time.Duration
	reset   bool
	size    int
	headers [][2]string
	call    string // a host to call (GET /) before answering
}

// control returns the value of a control from the query parameter key or,
// failing that, the request header x-echo-key.
func control(r *http.Request, q map[string][]string, key string) (string, bool) {
	if v, ok := q[key]; ok && len(v) > 0 {
		return v[0], true
	}
	if v := r.Header.Values("x-echo-" + key); len(v) > 0 {
		return v[0], true
	}
	return "", false
}

func parseControls(r *http.Request) (controls, error) {
	q := r.URL.Query()
	c := controls{status: http.StatusOK}
	if v, ok := control(r, q, "status"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 200 || n > 599 {
			return c, fmt.Errorf("status %q: want an integer in [200, 599]", v)
		}
		c.status = n
	}
	if v, ok := control(r, q, "delay"); ok {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return c, fmt.Errorf("delay %q: want a non-negative Go duration such as 200ms", v)
		}
		c.delay = min(d, MaxDelay)
	}
	if v, ok := control(r, q, "reset"); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return c, fmt.Errorf("reset %q: want true or false", v)
		}
		c.reset = b
	}
	if v, ok := control(r, q, "size"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return c, fmt.Errorf("size %q: want a non-negative integer", v)
		}
		c.size = min(n, MaxSize)
	}
	if v, ok := control(r, q, "call"); ok {
		if !validCallHost(v) {
			return c, fmt.Errorf("call %q: want a host name", v)
		}
		c.call = v
	}
	// header is repeatable in both places; all values apply.
	for _, kv := range append(q["header"], r.Header.Values("x-echo-header")...) {
		k, v, ok := strings.Cut(kv, ":")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidHeaderFieldValue(v) {
			return c, fmt.Errorf("header %q: want name:value", kv)
		}
		c.headers = append(c.headers, [2]string{k, v})
	}
	return c, nil
}

// serveRequest is the handler for every request, HTTP or gRPC, whatever the
// protocol version.
func (s *Server) serveRequest(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	s.inFlight.add(1)
	defer s.inFlight.add(-1)

	if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		s.grpc.ServeHTTP(w, r)
		return
	}
	s.serveHTTP(w, r)
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	n, err := io.Copy(io.Discard, r.Body)
	if err != nil {
		// The client went away or sent a broken body; nobody to answer.
		s.log.Debug("reading request body", "err", err)
		return
	}
	c, err := parseControls(r)
	if err != nil {
		s.writeJSON(w, http.StatusBadRequest, map[string]string{"error": "echo: " + err.Error()})
		return
	}
	if c.delay > 0 {
		if err := sleep(r.Context(), c.delay); err != nil {
			return
		}
	}
	if c.reset {
		s.reset(w, r)
		return
	}

	reply := &Reply{
		Name:      s.name,
		Version:   s.version,
		Method:    r.Method,
		Path:      r.URL.Path,
		Query:     r.URL.RawQuery,
		URI:       r.RequestURI,
		Host:      r.Host,
		Proto:     r.Proto,
		Headers:   make(map[string]string, len(r.Header)),
		BodyBytes: n,
	}
	for k, v := range r.Header {
		reply.Headers[strings.ToLower(k)] = strings.Join(v, ", ")
	}
	if c.call != "" {
		if reply.Upstream, err = s.call(r.Context(), r, c.call); err != nil {
			s.writeJSON(w, http.StatusBadGateway, map[string]string{"error": "echo: " + err.Error()})
			return
		}
	}
	for _, kv := range c.headers {
		w.Header().Add(kv[0], kv[1])
	}
	body, err := encodeReply(reply, c.size)
	if err != nil {
		s.writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "echo: " + err.Error()})
		return
	}
	s.write(w, c.status, body)
}

// encodeReply marshals reply, padding it so that the result is size bytes
// long when size is larger than the unpadded reply.
func encodeReply(reply *Reply, size int) ([]byte, error) {
	body, err := json.Marshal(reply)
	if err != nil {
		return nil, err
	}
	const overhead = len(`,"pad":""`)
	if pad := size - len(body) - overhead; pad > 0 {
		reply.Pad = strings.Repeat("x", pad)
		return json.Marshal(reply)
	}
	return body, nil
}

// reset aborts the request without a response: HTTP/1 closes the connection
// with a TCP RST, HTTP/2 resets the stream.
func (s *Server) reset(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			_ = conn.Close()
			return
		}
		s.log.Debug("hijack for reset failed; aborting handler", "err", err)
	}
	panic(http.ErrAbortHandler)
}

func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		panic(err) // only called with maps of strings
	}
	s.write(w, status, body)
}

func (s *Server) write(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Echo-Name", s.name)
	h.Set("X-Echo-Version", s.version)
	w.WriteHeader(status)
	if _, err := w.Write(body); err != nil {
		s.log.Debug("writing response", "err", err)
	}
}

// sleep waits for d or until ctx is done, whichever comes first.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
