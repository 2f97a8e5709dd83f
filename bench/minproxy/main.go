// Command minproxy is the floor bench/throughput.sh measures Weft against:
// the least an HTTP/1.1 reverse proxy on net/http can do, and nothing
// else. Its handler does what weft-proxy's synchronous upstream path does
// (internal/proxy/upstream/h1.go) — take an idle keep-alive connection to
// the one upstream (or dial one), write the request with Request.Write,
// read the response head with http.ReadResponse on the handler's
// goroutine, copy the headers and stream the body back — with no routing,
// filters, statistics, retries or request ids. What Weft costs above it is
// Weft's; what it costs above nginx is net/http's.
//
//	go run ./bench/minproxy -listen 127.0.0.1:8080 -upstream 127.0.0.1:8081
//
// A bench tool, not a product: no TLS, no timeouts, one upstream.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve on")
	up := flag.String("upstream", "", "upstream host:port (required)")
	flag.Parse()
	if *up == "" {
		log.Fatal("minproxy: -upstream is required")
	}
	p := &proxy{addr: *up}
	srv := &http.Server{Addr: *listen, Handler: p}
	log.Fatal(srv.ListenAndServe())
}

// proxy forwards every request to addr over a LIFO stack of idle
// connections.
type proxy struct {
	addr string
	mu   sync.Mutex
	idle []*upConn
}

type upConn struct {
	nc net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// hopByHop headers are per connection and never forwarded.
var hopByHop = map[string]bool{"Connection": true, "Keep-Alive": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true}

func (p *proxy) get() (*upConn, error) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		c := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return c, nil
	}
	p.mu.Unlock()
	nc, err := net.Dial("tcp", p.addr)
	if err != nil {
		return nil, err
	}
	return &upConn{nc: nc, br: bufio.NewReaderSize(nc, 4<<10), bw: bufio.NewWriterSize(nc, 4<<10)}, nil
}

func (p *proxy) put(c *upConn) {
	p.mu.Lock()
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	out := &http.Request{
		Method: r.Method, URL: r.URL, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: make(http.Header, len(r.Header)), Host: r.Host, ContentLength: r.ContentLength,
	}
	if r.ContentLength != 0 {
		out.Body = r.Body
	}
	for k, vv := range r.Header {
		if !hopByHop[k] {
			out.Header[k] = vv
		}
	}
	c, err := p.get()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	err = out.Write(c.bw)
	if err == nil {
		err = c.bw.Flush()
	}
	var resp *http.Response
	if err == nil {
		resp, err = http.ReadResponse(c.br, out)
	}
	if err != nil {
		c.nc.Close()
		http.Error(w, fmt.Sprint("upstream: ", err), http.StatusBadGateway)
		return
	}
	h := w.Header()
	for k, vv := range resp.Header {
		if !hopByHop[k] {
			h[k] = vv
		}
	}
	w.WriteHeader(resp.StatusCode)
	// A plain read/write loop as Weft's (io.Copy would take the
	// response's ReadFrom, which flushes the head in a write of its own).
	bp := bufPool.Get().(*[]byte)
	err = copyBody(w, resp.Body, *bp)
	bufPool.Put(bp)
	if err != nil || resp.Close || c.br.Buffered() > 0 {
		c.nc.Close()
		return
	}
	p.put(c)
}

func copyBody(w io.Writer, r io.Reader, buf []byte) error {
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
