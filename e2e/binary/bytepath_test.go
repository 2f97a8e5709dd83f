package binary

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestBytePathBinaries: a built sidecar serves a plain GET on its byte
// path (docs/proxy.md, "The byte path") and one started with
// WEFT_BYTE_PATH=off on the general path, and the app and the client
// see the same thing from both. Which path served shows in the order of
// the fields the app received: the byte path keeps the client's order
// and appends its own fields, the general path sorts them. Real
// traffic through `weft serve` and two `weft-proxy` inbound listeners.
func TestBytePathBinaries(t *testing.T) {
	bin := binaries(t)
	pre := newPrefix()

	// The app: records each request's field names in order, answers
	// with a fixed, length-framed response.
	app, err := net.Listen("tcp", pre+"5:18080")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	var mu sync.Mutex
	seen := map[string][]string{} // by the X-Client header: the field names the app got
	go func() {
		for {
			c, err := app.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tp := textproto.NewReader(bufio.NewReader(c))
				for {
					if _, err := tp.ReadLine(); err != nil {
						return
					}
					var names []string
					client := ""
					for {
						l, err := tp.ReadLine()
						if err != nil {
							return
						}
						if l == "" {
							break
						}
						k, v, _ := strings.Cut(l, ":")
						k = textproto.CanonicalMIMEHeaderKey(k)
						names = append(names, k)
						if k == "X-Client" {
							client = strings.TrimSpace(v)
						}
					}
					mu.Lock()
					seen[client] = names
					mu.Unlock()
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-App: 1\r\nContent-Length: 5\r\n\r\nhello")
				}
			}()
		}
	}()

	sidecar := inboundMesh(t, bin, pre, [2]string{"on", "2"}, [2]string{"off", "3"})
	sidecar("on")
	t.Setenv("WEFT_BYTE_PATH", "off") // for the next sidecar only: start reads the environment now
	sidecar("off")
	t.Setenv("WEFT_BYTE_PATH", "")

	// ask sends a plain GET twice on one connection and returns both
	// answers, Date left out.
	ask := func(ip, client string) (string, error) {
		c, err := net.DialTimeout("tcp", ip+":8080", 5*time.Second)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		var out []string
		for range 2 {
			io.WriteString(c, "GET /a?b=1 HTTP/1.1\r\nHost: svc.default.svc.cluster.local\r\nUser-Agent: t\r\nX-Client: "+client+"\r\nAccept: */*\r\n\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				return "", err
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return "", err
			}
			resp.Header.Del("Date")
			var h []string
			for k, vv := range resp.Header {
				h = append(h, k+": "+strings.Join(vv, ","))
			}
			slices.Sort(h)
			out = append(out, fmt.Sprintf("%s %v %q", resp.Status, h, body))
		}
		return strings.Join(out, " | "), nil
	}
	var on, off string
	eventually(t, 30*time.Second, "both sidecars answer", func() error {
		var err error
		if on, err = ask(pre+"2", "on"); err != nil {
			return err
		}
		if off, err = ask(pre+"3", "off"); err != nil {
			return err
		}
		if !strings.HasPrefix(on, "200 OK") {
			return fmt.Errorf("byte path sidecar answered %s", on)
		}
		return nil
	})
	if on != off {
		t.Errorf("the client saw different answers:\nbyte path: %s\ngeneral:   %s", on, off)
	}
	mu.Lock()
	defer mu.Unlock()
	wantOn := []string{"Host", "User-Agent", "X-Client", "Accept", "X-Forwarded-Proto", "X-Request-Id"}
	if !slices.Equal(seen["on"], wantOn) {
		t.Errorf("the byte path sidecar sent %v, want %v (the client's order, the proxy's fields after)", seen["on"], wantOn)
	}
	wantOff := []string{"Host", "User-Agent", "Accept", "X-Client", "X-Forwarded-Proto", "X-Request-Id"}
	if !slices.Equal(seen["off"], wantOff) {
		t.Errorf("the WEFT_BYTE_PATH=off sidecar sent %v, want %v (sorted: the general path)", seen["off"], wantOff)
	}
}
