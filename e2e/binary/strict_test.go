package binary

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"weft.dev/weft/internal/proxy/proxytest"
)

// checkMalformed sends a built sidecar's outbound listener a request its
// HTTP/1.1 server refuses (both Content-Length and Transfer-Encoding: a
// smuggling attempt), an HTTP/1.0 request and, over h2c, a request with a
// connection-specific header field between two well-formed ones. The
// first is answered 400 and counted in istio_requests_total with
// response_flags="DPE"; the second 426, counted without a flag; the
// third is reset with PROTOCOL_ERROR, counted in
// envoy_listener_http2_rx_messaging_error, and its connection serves on.
func checkMalformed(t *testing.T, c *http.Client, outbound, admin string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	// send writes raw to a new connection to the outbound listener and
	// returns a reader of what comes back.
	send := func(raw string) *bufio.Reader {
		conn, err := net.DialTimeout("tcp", outbound, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		conn.SetDeadline(deadline)
		io.WriteString(conn, raw)
		return bufio.NewReader(conn)
	}

	h1 := send("POST / HTTP/1.1\r\nHost: backend\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
	if resp, err := http.ReadResponse(h1, nil); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("Content-Length with Transfer-Encoding: %v %v, want 400", resp, err)
	}

	// HTTP/1.0, which Envoy's connection manager (and Istio) answer 426
	// unless accept_http_10: the README's proxies run without --http10.
	// The bytes of Istio's "http10 to http" test, bare LFs and all, and
	// the status line it expects.
	if line, err := send("GET / HTTP/1.0\n\n").ReadString('\n'); err != nil || line != "HTTP/1.1 426 Upgrade Required\r\n" {
		t.Errorf("HTTP/1.0: status line %q, %v; want HTTP/1.1 426 Upgrade Required", line, err)
	}

	// No Host: Envoy's connection manager answers 400 itself, without a
	// flag, and the connection goes on to serve the next request.
	noHost := send("GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nHost: backend\r\n\r\n")
	for i, want := range []int{http.StatusBadRequest, http.StatusOK} {
		resp, err := http.ReadResponse(noHost, nil)
		if err != nil || resp.StatusCode != want {
			t.Errorf("request %d on the connection after one without Host: %v %v, want %d", i, resp, err, want)
			break
		}
		io.Copy(io.Discard, resp.Body)
	}

	h := proxytest.DialH2C(t, outbound, deadline)
	h.Get(1, "backend", "/")
	h.Get(3, "backend", "/", "connection", "keep-alive")
	h.Get(5, "backend", "/")
	if got, want := h.Answers(3), map[uint32]string{1: "200", 3: "PROTOCOL_ERROR", 5: "200"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("h2c answers by stream %v, want %v", got, want)
	}

	eventually(t, 5*time.Second, "the refusals counted", func() error {
		fams := scrape(t, c, admin)
		var dpe, low, noHost, reset float64
		for _, m := range fams["istio_requests_total"].GetMetric() {
			switch l := labels(m); {
			case l["response_flags"] == "DPE" && l["response_code"] == "400":
				dpe += m.GetCounter().GetValue()
			case l["response_flags"] == "-" && l["response_code"] == "426":
				low += m.GetCounter().GetValue()
			case l["response_flags"] == "-" && l["response_code"] == "400":
				noHost += m.GetCounter().GetValue()
			}
		}
		for _, m := range fams["envoy_listener_http2_rx_messaging_error"].GetMetric() {
			reset += m.GetCounter().GetValue()
		}
		if dpe != 1 || low != 1 || noHost != 1 || reset != 1 {
			return fmt.Errorf("istio_requests_total{response_flags=\"DPE\",response_code=\"400\"} = %v, {response_flags=\"-\",response_code=\"426\"} = %v, {response_flags=\"-\",response_code=\"400\"} = %v, envoy_listener_http2_rx_messaging_error = %v; want 1 each", dpe, low, noHost, reset)
		}
		return nil
	})
}
