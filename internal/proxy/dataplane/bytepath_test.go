package dataplane

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	dto "github.com/prometheus/client_model/go"

	"weft.dev/weft/internal/proxy/forward"
	"weft.dev/weft/internal/proxy/telemetry"
	"weft.dev/weft/internal/xds/contract"
)

// The byte path (forward/bytepath.go) must answer exactly what the
// general path answers: the same upstream request, the same response,
// the same metrics, for the requests it takes, for the ones it declines
// and for the ones it hands back to the general path after its attempt
// (a response to retry, a reset, chunked or unsized bodies, responses
// whose type net/http would sniff). TestBytePathParity sends one list of
// raw requests through an outbound and an inbound listener twice, with
// the byte path on and off, and compares everything both runs saw.

// bytePathUpstream answers by path, and records every request head it
// reads, in order.
type bytePathUpstream struct {
	mu     sync.Mutex
	heads  []string
	orders []string // each head's field names in the order sent
	hits   map[string]int
}

func (u *bytePathUpstream) serve(_ int, c net.Conn, br *bufio.Reader) {
	for {
		tp := textproto.NewReader(br)
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		hdr := textproto.MIMEHeader{}
		var order []string
		for {
			fl, err := tp.ReadLine()
			if err != nil {
				return
			}
			if fl == "" {
				break
			}
			k, v, _ := strings.Cut(fl, ":")
			k = textproto.CanonicalMIMEHeaderKey(k)
			hdr.Add(k, strings.TrimSpace(v))
			order = append(order, k)
		}
		path := strings.Fields(line)[1]
		u.mu.Lock()
		u.heads = append(u.heads, normalizeHead(line, hdr))
		u.orders = append(u.orders, strings.Join(order, ","))
		n := u.hits[path]
		u.hits[path]++
		u.mu.Unlock()
		var resp string
		switch strings.SplitN(path, "?", 2)[0] {
		case "/retry": // 503, then 200: the general path's retry
			if n%2 == 0 {
				resp = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nbusy"
			} else {
				resp = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nagain"
			}
		case "/reset": // the connection reset before any response: 503 UC
			resetConn(c)
			return
		case "/chunked":
			resp = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
		case "/notype": // net/http sniffs the type
			resp = "HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n<html></html>\n"
		case "/pragma":
			resp = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nPragma: no-cache\r\nContent-Length: 2\r\n\r\nok"
		case "/nocontent":
			resp = "HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n"
		case "/options": // a Connection option names a field to drop
			resp = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: x-drop\r\nX-Drop: 1\r\nX-Keep: 1\r\nContent-Length: 2\r\n\r\nok"
		case "/close": // relayed; the upstream connection is not reused
			resp = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
		case "/date":
			resp = "HTTP/1.1 404 Nope\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n"
		default:
			resp = "HTTP/1.1 200 Fine\r\ncontent-type: text/plain\r\nX-Lower:  spaced  \r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n" +
				"Keep-Alive: timeout=5\r\nProxy-Foo: x\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello"
		}
		if _, err := io.WriteString(c, resp); err != nil || strings.Contains(resp, "Connection: close") {
			c.Close()
			return
		}
	}
}

// normalizeHead is a request head as a comparable string: the request
// line and the fields, canonical and sorted, a generated X-Request-Id
// shown as such.
func normalizeHead(line string, h textproto.MIMEHeader) string {
	var fs []string
	for k, vv := range h {
		for _, v := range vv {
			if k == "X-Request-Id" && len(v) == 36 && v != bytePathClientID {
				v = "<generated>"
			}
			fs = append(fs, k+": "+v)
		}
	}
	sort.Strings(fs)
	return line + "\n" + strings.Join(fs, "\n")
}

const bytePathClientID = "client-chosen-id"

// bytePathRequests are raw requests for one keep-alive connection: those
// the byte path takes, those it declines, and those it hands back.
var bytePathRequests = []string{
	"GET / HTTP/1.1\r\nHost: svc\r\nUser-Agent: t\r\n\r\n",
	"GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: svc\r\n\r\n", // no User-Agent: the general path's default
	"GET /ids HTTP/1.1\r\nhost: svc\r\nx-request-id: " + bytePathClientID + "\r\nX-Forwarded-Proto: https\r\n\r\n",
	"GET /fields HTTP/1.1\r\nHost: svc:80\r\nConnection: keep-alive\r\naccept: a\r\nAccept: b\r\nX-Spaced:   v  \r\nUser-Agent: t\r\n\r\n",
	"GET /date HTTP/1.1\r\nHost: svc\r\n\r\n",
	"GET /retry HTTP/1.1\r\nHost: svc\r\n\r\n",
	"GET /reset HTTP/1.1\r\nHost: svc\r\n\r\n",
	"GET /chunked HTTP/1.1\r\nHost: svc\r\n\r\n",
	"GET /notype HTTP/1.1\r\nHost: svc\r\n\r\n",
	"GET /pragma HTTP/1.1\r\nHost: svc\r\n\r\n",
	"GET /nocontent HTTP/1.1\r\nHost: svc\r\n\r\n",
	"GET /options HTTP/1.1\r\nHost: svc\r\n\r\n",
	"GET /close HTTP/1.1\r\nHost: svc\r\n\r\n",
	"GET /after-close HTTP/1.1\r\nHost: svc\r\n\r\n",
	// Declined: the general path's own.
	"GET /x%2Fy HTTP/1.1\r\nHost: svc\r\n\r\n",
	"GET /a//b/./c HTTP/1.1\r\nHost: svc\r\n\r\n",
	"HEAD / HTTP/1.1\r\nHost: svc\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: svc\r\nContent-Length: 2\r\n\r\nhi",
	"GET /te HTTP/1.1\r\nHost: svc\r\nTE: trailers\r\n\r\n",
	"GET /nohost HTTP/1.1\r\nX: y\r\n\r\n",
	"GET /proxy HTTP/1.1\r\nHost: svc\r\nProxy-Authorization: x\r\n\r\n",
	"GET /peer HTTP/1.1\r\nHost: svc\r\nX-Envoy-Peer-Metadata-Id: sidecar~1\r\n\r\n",
	"GET /last HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n",
}

func init() {
	// A sidecar's request, with its metadata exchange fields: an inbound
	// listener takes them for the source labels (the byte path too).
	md, err := telemetry.EncodePeerMetadata(contract.Identity{WorkloadName: "caller", Namespace: "other", Labels: map[string]string{"app": "caller", "version": "v2"}})
	if err != nil {
		panic(err)
	}
	peer := "GET /from-sidecar HTTP/1.1\r\nHost: svc\r\nX-Envoy-Peer-Metadata: " + md + "\r\nX-Envoy-Peer-Metadata-Id: sidecar~caller\r\nUser-Agent: t\r\n\r\n"
	bytePathRequests = slices.Insert(bytePathRequests, 1, peer)
}

// bytePathRun is what one run saw.
type bytePathRun struct {
	responses []string
	heads     []string
	orders    []string
	metrics   []string
}

func TestBytePathParity(t *testing.T) {
	for _, dir := range []core.TrafficDirection{core.TrafficDirection_OUTBOUND, core.TrafficDirection_INBOUND} {
		t.Run(dir.String(), func(t *testing.T) {
			on := bytePathRunWith(t, true, dir)
			off := bytePathRunWith(t, false, dir)
			// Which path sent the first request shows in the order of its
			// fields: the byte path keeps the client's and appends its
			// own, the general path sorts them.
			added := "X-Forwarded-Proto,X-Request-Id"
			sorted := "X-Forwarded-Proto,X-Request-Id"
			if dir == core.TrafficDirection_OUTBOUND {
				added += ",X-Envoy-Peer-Metadata,X-Envoy-Peer-Metadata-Id"
				sorted = "X-Envoy-Peer-Metadata,X-Envoy-Peer-Metadata-Id," + sorted
			}
			if want := "Host,User-Agent," + added; len(on.orders) == 0 || on.orders[0] != want {
				t.Errorf("byte path on: first request's fields %q, want %q (the byte path's)", on.orders, want)
			}
			if want := "Host,User-Agent," + sorted; len(off.orders) == 0 || off.orders[0] != want {
				t.Errorf("byte path off: first request's fields %q, want %q (the general path's)", off.orders, want)
			}
			if len(on.responses) != len(off.responses) {
				t.Fatalf("byte path on: %d responses, off: %d", len(on.responses), len(off.responses))
			}
			for i := range on.responses {
				if on.responses[i] != off.responses[i] {
					t.Errorf("request %q:\nbyte path on:\n%s\noff:\n%s", bytePathRequests[i], on.responses[i], off.responses[i])
				}
			}
			if !slices.Equal(on.heads, off.heads) {
				t.Errorf("the upstream saw different requests:\non:\n%s\n\noff:\n%s", strings.Join(on.heads, "\n\n"), strings.Join(off.heads, "\n\n"))
			}
			if !slices.Equal(on.metrics, off.metrics) {
				t.Errorf("different metrics:\nonly with the byte path on:\n%s\n\nonly with it off:\n%s",
					strings.Join(without(on.metrics, off.metrics), "\n"), strings.Join(without(off.metrics, on.metrics), "\n"))
			}
		})
	}
}

// bytePathRunWith sends bytePathRequests through a listener of direction
// dir, with the byte path on or off.
func bytePathRunWith(t *testing.T, on bool, dir core.TrafficDirection) bytePathRun {
	old := forward.BytePath
	forward.BytePath = on
	t.Cleanup(func() { forward.BytePath = old })

	up := &bytePathUpstream{hits: map[string]int{}}
	addr, _ := rawUpstream(t, up.serve)
	reg := newRegistry()
	d := newDataplane(t, contract.Identity{WorkloadName: "client", Namespace: "default"}, reg)
	r := toCluster("all", prefixMatch("/"), "up")
	withRetries(r.GetRoute())
	mustApply(t, d, resourcesAny(staticCluster(t, "up", addr),
		routeConfig("r", vhost("v", []string{"svc", "svc:80"}, r)),
		httpListener(t, "l", dir, "r", nil)))

	var run bytePathRun
	c, err := net.Dial("tcp", d.ListenerAddr("l").String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for _, raw := range bytePathRequests {
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		req, _ := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			run.responses = append(run.responses, "error: "+err.Error())
			break
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		run.responses = append(run.responses, describeResponse(resp, body, err))
		if resp.Close {
			break
		}
	}
	up.mu.Lock()
	run.heads = slices.Clone(up.heads)
	run.orders = slices.Clone(up.orders)
	up.mu.Unlock()
	run.metrics = metricLines(t, reg)
	return run
}

// describeResponse is a response as a comparable string: a Date's value
// is the clock's unless the upstream sent one.
func describeResponse(resp *http.Response, body []byte, err error) string {
	var fs []string
	for k, vv := range resp.Header {
		for _, v := range vv {
			if k == "Date" && !strings.HasSuffix(v, "2024 00:00:00 GMT") {
				v = "<now>"
			}
			fs = append(fs, k+": "+v)
		}
	}
	sort.Strings(fs)
	return fmt.Sprintf("%s %s close=%v length=%d\n%s\n%q %v", resp.Proto, resp.Status, resp.Close, resp.ContentLength, strings.Join(fs, "\n"), body, err)
}

// metricLines are the request metrics and cluster statistics, one line
// a series, durations left out (their counts kept).
func metricLines(t *testing.T, reg interface {
	Gather() ([]*dto.MetricFamily, error)
}) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, "istio_") && !strings.HasPrefix(name, "envoy_cluster_") {
			continue
		}
		timed := strings.Contains(name, "duration") || strings.Contains(name, "_time")
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			v := ""
			switch {
			case m.GetCounter() != nil:
				v = fmt.Sprint(m.GetCounter().GetValue())
			case m.GetGauge() != nil:
				v = fmt.Sprint(m.GetGauge().GetValue())
			case m.GetHistogram() != nil:
				v = fmt.Sprint("count=", m.GetHistogram().GetSampleCount())
				if !timed {
					v += fmt.Sprint(" sum=", m.GetHistogram().GetSampleSum())
				}
			}
			lines = append(lines, name+"{"+strings.Join(ls, ",")+"} "+v)
		}
	}
	sort.Strings(lines)
	return lines
}

// without is a's lines that b does not have.
func without(a, b []string) []string {
	var d []string
	for _, l := range a {
		if !slices.Contains(b, l) {
			d = append(d, l)
		}
	}
	return d
}

// TestBytePathBrokenBody: an upstream that breaks off a response's body
// resets the downstream connection and is counted UR, on either path.
func TestBytePathBrokenBody(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprint("byte path ", on), func(t *testing.T) {
			old := forward.BytePath
			forward.BytePath = on
			t.Cleanup(func() { forward.BytePath = old })
			addr, _ := rawUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err == nil {
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nabc")
					time.Sleep(10 * time.Millisecond)
					resetConn(c)
				}
			})
			base, reg, _ := h1Proxy(t, addr)
			req, _ := http.NewRequest("GET", base+"/", nil)
			req.Host = "svc"
			resp, err := client(t, false).Do(req)
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			if err == nil {
				t.Fatal("the response came whole, want it cut short")
			}
			waitFor(t, func() bool {
				return counterValue(t, reg, map[string]string{"response_flags": "UR", "response_code": "200"}) == 1
			})
		})
	}
}
