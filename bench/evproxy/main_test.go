//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The test binary runs as evproxy itself when this is set (its flags are
// the test's arguments after "--").
const runEnv = "EVPROXY_TEST_RUN"

func TestMain(m *testing.M) {
	if os.Getenv(runEnv) != "" {
		for i, a := range os.Args {
			if a == "--" {
				os.Args = append(os.Args[:1], os.Args[i+1:]...)
				break
			}
		}
		main()
	}
	os.Exit(m.Run())
}

// TestModels: each model forwards keep-alive GETs, a POST with a body,
// and a response whose body ends with the upstream's connection, drops
// hop-by-hop headers both ways and keeps the rest.
func TestModels(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Connection") != "" || r.Header.Get("Keep-Alive") != "" {
			t.Errorf("hop-by-hop request headers reached the upstream: %v", r.Header)
		}
		w.Header().Set("X-Seen", r.Header.Get("X-Test"))
		if id := r.Header.Get("X-Request-Id"); id != "" && (len(id) != 36 || r.Header.Get("X-Forwarded-Proto") != "http") {
			t.Errorf("-work: X-Request-Id %q, X-Forwarded-Proto %q", id, r.Header.Get("X-Forwarded-Proto"))
		}
		w.Header().Set("X-Got-Id", fmt.Sprint(r.Header.Get("X-Request-Id") != ""))
		w.Header().Set("Keep-Alive", "timeout=5")
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/stream": // no Content-Length: the body ends with the connection
			w.Header().Set("Transfer-Encoding", "identity") // net/http's way to say so
			w.(http.Flusher).Flush()
			io.WriteString(w, "streamed")
		default:
			w.Header().Set("Content-Length", fmt.Sprint(len(body)+len(r.URL.Path)))
			io.WriteString(w, r.URL.Path)
			w.Write(body)
		}
	}))
	defer up.Close()
	for _, model := range []string{"netpoll", "epoll", "goroutines", "goroutines -work"} {
		t.Run(model, func(t *testing.T) {
			work := strings.HasSuffix(model, " -work")
			addr := start(t, strings.TrimSuffix(model, " -work"), strings.TrimPrefix(up.URL, "http://"), work)
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 5 * time.Second}
			defer client.CloseIdleConnections()
			for i := range 5 {
				req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s/get%d", addr, i), nil)
				req.Header.Set("X-Test", "t")
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					t.Fatal(err)
				}
				if want := fmt.Sprintf("/get%d", i); string(b) != want || resp.Header.Get("X-Seen") != "t" || resp.Header.Get("Keep-Alive") != "" {
					t.Fatalf("GET: %q %v; want %q with X-Seen and no Keep-Alive", b, resp.Header, want)
				}
				if got := resp.Header.Get("X-Got-Id"); got != fmt.Sprint(work) {
					t.Fatalf("the upstream got a request id: %s; want %v", got, work)
				}
			}
			body := bytes.Repeat([]byte("b"), 3000)
			resp, err := client.Post("http://"+addr+"/post", "text/plain", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != "/post"+string(body) {
				t.Fatalf("POST: %d bytes back; want the path and the body", len(b))
			}
			resp, err = client.Get("http://" + addr + "/stream")
			if err != nil {
				t.Fatal(err)
			}
			b, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("a body that ends with the connection: %v", err) // the end never came
			}
			if string(b) != "streamed" {
				t.Fatalf("a body that ends with the connection: %q", b)
			}
		})
	}
}

// start runs the test binary as evproxy with model (and -work) and returns its
// address; the process is killed when the test ends.
func start(t *testing.T, model, upstream string, work bool) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$", "--", "-model", model, "-listen", addr, "-upstream", upstream, fmt.Sprintf("-work=%v", work))
	cmd.Env = append(os.Environ(), runEnv+"=1")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	for range 100 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("evproxy -model %s did not listen on %s", model, addr)
	return ""
}

// TestBadFlags: a model that does not exist, or -work where it is not
// done, stops evproxy at once with what was wrong, before it listens.
func TestBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-model", "threads"}, `-model "threads"`},
		{[]string{"-model", "netpoll", "-work"}, `-work is only in -model goroutines, not "netpoll"`},
	} {
		cmd := exec.Command(os.Args[0], append([]string{"-test.run=^$", "--", "-listen", "127.0.0.1:1", "-upstream", "127.0.0.1:2"}, tc.args...)...)
		cmd.Env = append(os.Environ(), runEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("evproxy %v: %v, %q; want a failure saying %q", tc.args, err, out, tc.want)
		}
	}
}
