package dataplane

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"weft.dev/weft/internal/xds/contract"
)

// TestGRPCResponseInOneWrite: a unary gRPC response whose headers,
// message and trailers reach the proxy in one read leaves it in one
// write — the client's first read after its request holds all three
// frames, the stream's end included. A proxy that flushed the message
// before the trailers arrived costs the hop a second system call on
// each side (and the client a second wake-up) per call. The request
// goes the same way: its HEADERS and its whole body (DATA with
// END_STREAM), which arrived together, reach the upstream in one read.
func TestGRPCResponseInOneWrite(t *testing.T) {
	split := make(chan uint32, 64)
	up := rawGRPCUpstream(t, split)
	d := newDataplane(t, contract.Identity{WorkloadName: "t", Namespace: "default"}, nil)
	mustApply(t, d, resourcesAny(edsCluster(t, "outbound|8079||grpc", true, ""), cla("outbound|8079||grpc", ep{Addr: up}),
		routeConfig("r", vhost("v", []string{"*"}, toCluster("all", prefixMatch("/"), "outbound|8079||grpc"))),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil)))

	c, err := net.Dial("tcp", d.ListenerAddr("out").String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	for settled, acked := false, false; !settled || !acked; { // the server's SETTINGS and its ack of ours
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok {
			if sf.IsAck() {
				acked = true
			} else {
				settled = true
				fr.WriteSettingsAck()
			}
		}
	}

	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/grpc.testing.BenchmarkService/UnaryCall"},
		{":authority", "grpc"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	msg := []byte{0, 0, 0, 0, 2, 0x08, 0x01} // an uncompressed gRPC message of 2 bytes
	for call := uint32(1); call <= 21; call += 2 {
		var req bytes.Buffer // the request's HEADERS and DATA in one write, as grpc-go sends them
		rfr := http2.NewFramer(&req, nil)
		rfr.WriteHeaders(http2.HeadersFrameParam{StreamID: call, BlockFragment: hb.Bytes(), EndHeaders: true})
		rfr.WriteData(call, true, msg)
		if _, err := c.Write(req.Bytes()); err != nil {
			t.Fatal(err)
		}

		// One read: what the proxy wrote first, whole.
		buf := make([]byte, 64<<10)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got := http2.NewFramer(nil, bytes.NewReader(buf[:n]))
		var kinds []string
		ended := false
		for !ended {
			f, err := got.ReadFrame()
			if err != nil {
				t.Fatalf("call %d: the first write ends after %v (%d bytes): %v", call, kinds, n, err)
			}
			kinds = append(kinds, f.Header().Type.String())
			if f.Header().StreamID == call && f.Header().Flags.Has(http2.FlagHeadersEndStream) {
				_, ended = f.(*http2.HeadersFrame)
				if df, ok := f.(*http2.DataFrame); ok && df.StreamEnded() {
					t.Fatalf("call %d: the stream ended on DATA, not with the upstream's trailers: %v", call, kinds)
				}
			}
		}
		if len(kinds) < 3 {
			t.Fatalf("call %d: %v", call, kinds)
		}
	}
	select {
	case id := <-split:
		t.Errorf("upstream stream %d: the request's HEADERS and DATA came in two writes", id)
	default:
	}
}

// rawGRPCUpstream is an h2c upstream that answers each request, once
// its body has ended, with HEADERS, one DATA and the trailers in a
// single write. The streams whose request HEADERS and the DATA that
// ended them came in different reads are sent on split.
func rawGRPCUpstream(t *testing.T, split chan<- uint32) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			go serveRawGRPC(c, split)
		}
	}()
	return ln.Addr().String()
}

func serveRawGRPC(c net.Conn, split chan<- uint32) {
	defer c.Close()
	rd := &readCounter{r: c}
	pre := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(rd, pre); err != nil {
		return
	}
	fr := http2.NewFramer(c, rd)
	headersRead := map[uint32]int{}
	fr.WriteSettings()
	var out bytes.Buffer
	ofr := http2.NewFramer(&out, nil)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	block := func(fields ...string) []byte {
		hb.Reset()
		for i := 0; i < len(fields); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		return bytes.Clone(hb.Bytes())
	}
	for {
		at := rd.next()
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.HeadersFrame:
			headersRead[f.StreamID] = at
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				fr.WritePing(true, f.Data)
			}
		case *http2.DataFrame:
			if !f.StreamEnded() {
				continue
			}
			id := f.StreamID
			if headersRead[id] != at {
				select {
				case split <- id:
				default:
				}
			}
			delete(headersRead, id)
			out.Reset()
			ofr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, EndHeaders: true,
				BlockFragment: block(":status", "200", "content-type", "application/grpc")})
			ofr.WriteData(id, false, []byte{0, 0, 0, 0, 2, 0x08, 0x02})
			ofr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, EndHeaders: true, EndStream: true,
				BlockFragment: block("grpc-status", "0", "grpc-message", "")})
			if _, err := c.Write(out.Bytes()); err != nil {
				return
			}
		}
	}
}

// readCounter reads r through a buffer and numbers its reads, so a
// frame's first byte can be told to have come in the same read as
// another's.
type readCounter struct {
	r    io.Reader
	buf  [64 << 10]byte
	n    int // bytes in buf
	off  int // read up to
	seq  int // reads of r so far
	errr error
}

// next is the number of the read the next byte comes from.
func (rc *readCounter) next() int {
	if rc.off < rc.n {
		return rc.seq
	}
	return rc.seq + 1
}

func (rc *readCounter) Read(p []byte) (int, error) {
	if rc.off == rc.n {
		if rc.errr != nil {
			return 0, rc.errr
		}
		n, err := rc.r.Read(rc.buf[:])
		rc.seq++
		rc.n, rc.off, rc.errr = n, 0, err
		if n == 0 {
			return 0, err
		}
	}
	k := copy(p, rc.buf[rc.off:rc.n])
	rc.off += k
	return k, nil
}
