package h2client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rawServer accepts connections on loopback and runs serve on each with
// a framer, after the client's preface and an empty SETTINGS of its own:
// a peer that sends what Go's server would not.
func rawServer(t *testing.T, serve func(fr *http2.Framer, conn int)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				pre := make([]byte, len(http2.ClientPreface))
				if _, err := io.ReadFull(c, pre); err != nil {
					return
				}
				fr := http2.NewFramer(c, c)
				fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
				fr.WriteSettings()
				serve(fr, int(n.Add(1)))
			}()
		}
	}()
	return ln.Addr().String()
}

// nextRequest reads frames until a request's headers, answering
// SETTINGS; it returns the stream and whether the headers ended it.
func nextRequest(fr *http2.Framer) (uint32, bool, error) {
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return 0, false, err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			return f.StreamID, f.StreamEnded(), nil
		}
	}
}

// awaitData reads frames until a DATA frame; false when the connection
// ends first.
func awaitData(fr *http2.Framer) bool {
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return false
		}
		if _, ok := f.(*http2.DataFrame); ok {
			return true
		}
	}
}

// drain reads frames until the connection ends.
func drain(fr *http2.Framer) {
	for {
		if _, err := fr.ReadFrame(); err != nil {
			return
		}
	}
}

func respond(fr *http2.Framer, id uint32, end bool, fields ...string) {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for i := 0; i < len(fields); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true, EndStream: end})
}

func TestRefusedAndUnprocessedAreRetried(t *testing.T) {
	for _, how := range []string{"REFUSED_STREAM", "GOAWAY"} {
		t.Run(how, func(t *testing.T) {
			addr := rawServer(t, func(fr *http2.Framer, conn int) {
				for {
					id, ended, err := nextRequest(fr)
					if err != nil {
						return
					}
					if !ended && !awaitData(fr) {
						return // refused once its body has been read
					}
					if conn == 1 {
						// The first connection refuses every request.
						if how == "GOAWAY" {
							fr.WriteGoAway(0, http2.ErrCodeNo, nil)
							drain(fr)
							return
						}
						fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
						continue
					}
					respond(fr, id, true, ":status", "200")
				}
			})
			c := newClient(addr)
			// A request whose body was read cannot be sent again here:
			// the caller's retry policy decides (refused-stream).
			_, err := c.RoundTrip(context.Background(), request(t, "POST", addr, "/", strings.NewReader("body")))
			if err == nil || !strings.Contains(err.Error(), "REFUSED_STREAM") {
				t.Fatalf("with a body: err %v, want REFUSED_STREAM", err)
			}
			// So is one whose body was whole in memory.
			r := request(t, "POST", addr, "/", nil)
			r.Body = &memReader{Reader: strings.NewReader("body")}
			resp, err := c.RoundTrip(context.Background(), r)
			if how == "GOAWAY" {
				if err != nil {
					t.Fatalf("body in memory: %v", err)
				}
				resp.Body.Close()
			}
			// One without a body is sent again, on a new connection after
			// a GOAWAY; a server refusing every stream is given up on.
			resp, err = c.RoundTrip(context.Background(), request(t, "GET", addr, "/", nil))
			if how == "REFUSED_STREAM" {
				if err == nil || !strings.Contains(err.Error(), "REFUSED_STREAM") {
					t.Fatalf("err %v, want REFUSED_STREAM after the retries", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		})
	}
}

func TestMalformedResponses(t *testing.T) {
	cases := map[string]func(fr *http2.Framer, id uint32){
		"upper-case name":       func(fr *http2.Framer, id uint32) { respond(fr, id, true, ":status", "200", "X-Bad", "1") },
		"connection header":     func(fr *http2.Framer, id uint32) { respond(fr, id, true, ":status", "200", "connection", "close") },
		"no status":             func(fr *http2.Framer, id uint32) { respond(fr, id, true, "x", "1") },
		"request pseudo-header": func(fr *http2.Framer, id uint32) { respond(fr, id, true, ":status", "200", ":path", "/") },
		"pseudo after regular":  func(fr *http2.Framer, id uint32) { respond(fr, id, true, "x", "1", ":status", "200") },
		"101":                   func(fr *http2.Framer, id uint32) { respond(fr, id, true, ":status", "101") },
		"two content-lengths": func(fr *http2.Framer, id uint32) {
			respond(fr, id, true, ":status", "200", "content-length", "1", "content-length", "2")
		},
		"1xx ending the stream": func(fr *http2.Framer, id uint32) { respond(fr, id, true, ":status", "103") },
	}
	for name, answer := range cases {
		t.Run(name, func(t *testing.T) {
			rst := make(chan http2.ErrCode, 1)
			addr := rawServer(t, func(fr *http2.Framer, _ int) {
				id, _, err := nextRequest(fr)
				if err != nil {
					return
				}
				answer(fr, id)
				for {
					f, err := fr.ReadFrame()
					if err != nil {
						return
					}
					if f, ok := f.(*http2.RSTStreamFrame); ok {
						rst <- f.ErrCode
						return
					}
				}
			})
			c := newClient(addr)
			_, err := c.RoundTrip(context.Background(), request(t, "GET", addr, "/", nil))
			if err == nil || !strings.Contains(err.Error(), "malformed") {
				t.Fatalf("err %v, want a malformed response", err)
			}
			select {
			case code := <-rst:
				if code != http2.ErrCodeProtocol {
					t.Errorf("RST_STREAM %v", code)
				}
			case <-time.After(5 * time.Second):
				t.Error("no RST_STREAM")
			}
		})
	}
}

func TestInformationalSkippedAndLengthChecked(t *testing.T) {
	addr := rawServer(t, func(fr *http2.Framer, _ int) {
		for {
			id, _, err := nextRequest(fr)
			if err != nil {
				return
			}
			respond(fr, id, false, ":status", "103", "link", "</a>")
			respond(fr, id, false, ":status", "200", "content-length", "10")
			fr.WriteData(id, true, []byte("short")) // 5 of the 10 promised
		}
	})
	c := newClient(addr)
	resp, err := c.RoundTrip(context.Background(), request(t, "GET", addr, "/", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != 10 {
		t.Errorf("%d, length %d", resp.StatusCode, resp.ContentLength)
	}
	if _, err := io.ReadAll(resp.Body); err == nil || !strings.Contains(err.Error(), "content-length") {
		t.Errorf("read: %v, want a length mismatch", err)
	}
}

func TestResetAfterCompleteResponseOnlyStopsTheBody(t *testing.T) {
	// RFC 9113 §8.1: a complete response, then RST_STREAM NO_ERROR, ends
	// the upload without failing the response.
	addr := rawServer(t, func(fr *http2.Framer, _ int) {
		id, _, err := nextRequest(fr)
		if err != nil {
			return
		}
		respond(fr, id, false, ":status", "413")
		fr.WriteData(id, true, []byte("too big"))
		fr.WriteRSTStream(id, http2.ErrCodeNo)
		drain(fr)
	})
	c := newClient(addr)
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write([]byte("the start of an endless upload"))
	resp, err := c.RoundTrip(context.Background(), request(t, "POST", addr, "/", pr))
	if err != nil {
		t.Fatal(err)
	}
	if b := readAll(t, resp); resp.StatusCode != 413 || b != "too big" {
		t.Errorf("%d %q", resp.StatusCode, b)
	}
}

func TestPingTimeoutClosesConnection(t *testing.T) {
	// The peer reads but never answers (nor sends anything).
	addr := rawServer(t, func(fr *http2.Framer, _ int) {
		for {
			if _, err := fr.ReadFrame(); err != nil {
				return
			}
		}
	})
	d := &net.Dialer{}
	c := New(Config{
		Dial:         func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) },
		PingInterval: 50 * time.Millisecond, PingTimeout: 50 * time.Millisecond,
	})
	_, err := c.RoundTrip(context.Background(), request(t, "GET", addr, "/", nil))
	if !errors.Is(err, errPingTimeout) {
		t.Fatalf("err %v, want the ping timeout", err)
	}
	if c.Conns() != 0 {
		t.Errorf("%d connections kept", c.Conns())
	}
}

// TestStorageReused: a lent Storage holds each response's header and
// trailers in the same maps, round trip after round trip; a response
// takes the place of the one before (a retry's), fields and all; and a
// stream the caller has given up never writes to the Storage again,
// even when the peer sends it trailers after the Storage has gone to
// the next request.
func TestStorageReused(t *testing.T) {
	addr := rawServer(t, func(fr *http2.Framer, _ int) {
		for n := 0; ; n++ {
			id, _, err := nextRequest(fr)
			if err != nil {
				return
			}
			if n == 3 {
				// The caller closes this body before the end: after its
				// RST_STREAM, the trailers come all the same.
				respond(fr, id, false, ":status", "200", "x-n", "3")
				fr.WriteData(id, false, []byte("partial"))
				for {
					f, err := fr.ReadFrame()
					if err != nil {
						return
					}
					if _, ok := f.(*http2.RSTStreamFrame); ok {
						break
					}
				}
				respond(fr, id, true, "x-late", "stale", "grpc-status", "13")
				continue
			}
			fields := []string{":status", "200", "x-n", string(rune('0' + n))}
			if n == 0 {
				fields = append(fields, "x-first", "yes")
			}
			respond(fr, id, false, fields...)
			fr.WriteData(id, false, []byte("body"))
			respond(fr, id, true, "grpc-status", "0", "x-t", string(rune('0'+n)))
		}
	})
	c := newClient(addr)
	var st Storage
	var first http.Header
	for n := range 3 {
		resp, _, err := c.RoundTripInto(context.Background(), request(t, "GET", addr, "/", nil), &st)
		if err != nil {
			t.Fatal(err)
		}
		if b := readAll(t, resp); b != "body" {
			t.Fatalf("response %d: body %q", n, b)
		}
		if n == 0 {
			first = resp.Header
		} else if reflect.ValueOf(resp.Header).UnsafePointer() != reflect.ValueOf(first).UnsafePointer() {
			t.Errorf("response %d: a header map of its own, want the Storage's", n)
		}
		want := string(rune('0' + n))
		if got := resp.Header.Get("X-N"); got != want {
			t.Errorf("response %d: X-N %q", n, got)
		}
		if _, ok := resp.Header["X-First"]; ok != (n == 0) {
			t.Errorf("response %d: X-First present %v, want %v: an earlier response's field left over", n, ok, n == 0)
		}
		if resp.Trailer.Get("Grpc-Status") != "0" || resp.Trailer.Get("X-T") != want {
			t.Errorf("response %d: trailers %v", n, resp.Trailer)
		}
		if n == 1 {
			st.Reset() // as for the next request; n == 2 reuses the maps as a retry does
		}
	}
	// Given up mid-body: the late trailers do not reach the Storage,
	// which serves another request meanwhile.
	resp, _, err := c.RoundTripInto(context.Background(), request(t, "GET", addr, "/", nil), &st)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	st.Reset()
	for range 20 {
		resp, _, err := c.RoundTripInto(context.Background(), request(t, "GET", addr, "/", nil), &st)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		if _, ok := resp.Trailer["X-Late"]; ok || resp.Trailer.Get("Grpc-Status") != "0" {
			t.Fatalf("trailers %v: a given-up stream's reached the Storage", resp.Trailer)
		}
		st.Reset()
	}
}
