package upstream

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawServer answers the first request on each connection with reply,
// then echoes what it reads, until the test ends.
func rawServer(t *testing.T, reply string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, reply)
		io.Copy(c, br)
	}()
	return ln.Addr().String()
}

func upgradeRequest(addr string) *http.Request {
	out, _ := http.NewRequest("GET", "http://"+addr+"/ws", nil)
	out.Header.Set("Connection", "Upgrade")
	out.Header.Set("Upgrade", "websocket")
	return out
}

// TestUpgradeSwitch: a 101 gives the connection as a Stream whose first
// reads return the bytes the upstream sent right after the head.
func TestUpgradeSwitch(t *testing.T) {
	addr := rawServer(t, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nearly bytes|")
	p := NewPool(Options{})
	resp, st, err := p.Upgrade(context.Background(), p.Endpoint(addr, nil), upgradeRequest(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols || st == nil {
		t.Fatalf("got %d, stream %v; want 101 and a stream", resp.StatusCode, st)
	}
	st.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(st, "echoed"); err != nil {
		t.Fatal(err)
	}
	if err := st.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(st)
	if err != nil || string(b) != "early bytes|echoed" {
		t.Fatalf("read %q, %v; want the early bytes, then the echo, then EOF", b, err)
	}
}

// TestUpgradeRefused: any other answer is a plain response on a
// connection of its own, closed with the body.
func TestUpgradeRefused(t *testing.T) {
	addr := rawServer(t, "HTTP/1.1 426 Upgrade Required\r\nContent-Length: 4\r\n\r\nnope")
	p := NewPool(Options{})
	resp, st, err := p.Upgrade(context.Background(), p.Endpoint(addr, nil), upgradeRequest(addr))
	if err != nil {
		t.Fatal(err)
	}
	if st != nil || resp.StatusCode != http.StatusUpgradeRequired {
		t.Fatalf("got %d, stream %v; want 426 and no stream", resp.StatusCode, st)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "nope" {
		t.Errorf("body %q", b)
	}
}

// TestUpgradeConnectError: a failure to connect is a connect error (UF).
func TestUpgradeConnectError(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	p := NewPool(Options{})
	_, _, err := p.Upgrade(context.Background(), p.Endpoint(addr, nil), upgradeRequest(addr))
	if !IsConnectError(err) || !strings.Contains(err.Error(), "connect") {
		t.Fatalf("err = %v, want a connect error", err)
	}
}
