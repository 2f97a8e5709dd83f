package e2e

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"weft.dev/weft/internal/echo"
)

// TestSidecarRefusesAmbiguousFraming sends raw bytes to a sidecar's
// outbound listener, as an application would: a good request, then one
// with both Content-Length and Transfer-Encoding whose chunked body
// hides a second request. The first is answered by the backend through
// both sidecars; the second gets the sidecar's 400 and the connection
// closes, so the hidden request is never sent anywhere. Then one with
// obsolete line folding, on a new connection, gets 400 too.
func TestSidecarRefusesAmbiguousFraming(t *testing.T) {
	m := NewMesh(t)
	m.Service("backend", "HTTP", "v1")
	front := m.Client("frontend")
	waitVersion(t, newClient(), front, "backend", nil, "")

	exchange := func(raw string) []*http.Response {
		t.Helper()
		c, err := net.Dial("tcp", front.Outbound)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		var out []*http.Response
		for range 3 {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				break
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var r echo.Reply
			if json.Unmarshal(b, &r) == nil && r.Path != "" {
				resp.Header.Set("X-Test-Echo-Path", r.Path)
			}
			out = append(out, resp)
			if resp.Close {
				break
			}
		}
		return out
	}

	const hidden = "GET /hidden HTTP/1.1\r\nHost: backend\r\n\r\n"
	resps := exchange("GET /first HTTP/1.1\r\nHost: backend\r\n\r\n" +
		"POST /smuggle HTTP/1.1\r\nHost: backend\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"0\r\n\r\n" + hidden)
	if len(resps) != 2 || resps[0].StatusCode != 200 || resps[0].Header.Get("X-Test-Echo-Path") != "/first" ||
		resps[1].StatusCode != 400 || !resps[1].Close {
		var got []string
		for _, r := range resps {
			got = append(got, r.Status+" "+r.Header.Get("X-Test-Echo-Path"))
		}
		t.Fatalf("answers %q, want 200 from the backend for /first, then 400 closing the connection", got)
	}
	if resps := exchange("GET /fold HTTP/1.1\r\nHost: backend\r\nX-A: a\r\n b\r\n\r\n"); len(resps) != 1 || resps[0].StatusCode != 400 {
		t.Fatalf("obsolete line folding: %d answers, want one 400", len(resps))
	}
}
