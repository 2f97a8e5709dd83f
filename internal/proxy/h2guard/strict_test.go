package h2guard

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// chunkConn is the client's side seen by the guard: its bytes in the
// chunks given, then EOF.
type chunkConn struct {
	net.Conn
	chunks [][]byte
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	if c.chunks[0] = c.chunks[0][n:]; len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

func (c *chunkConn) Close() error { return nil }

// chunked cuts b into pieces of the given size (0: whole).
func chunked(b []byte, size int) [][]byte {
	if size == 0 {
		return [][]byte{b}
	}
	var out [][]byte
	for len(b) > 0 {
		k := min(size, len(b))
		out = append(out, b[:k])
		b = b[k:]
	}
	return out
}

// client writes what an HTTP/2 client sends, with one HPACK encoder for
// the connection as a client keeps.
type client struct {
	buf bytes.Buffer
	fr  *http2.Framer
	enc *hpack.Encoder
	hb  bytes.Buffer
}

func newClient() *client {
	c := &client{}
	c.buf.WriteString(Preface)
	c.fr = http2.NewFramer(&c.buf, nil)
	c.enc = hpack.NewEncoder(&c.hb)
	return c
}

// block encodes fields, name and value pairs: a name starting with "!"
// is sent never indexed, any other with incremental indexing (Go's
// encoder's choice), so later blocks may refer to it.
func (c *client) block(fields ...string) []byte {
	c.hb.Reset()
	for i := 0; i < len(fields); i += 2 {
		name, sensitive := fields[i], false
		switch name[0] {
		case '!':
			name, sensitive = name[1:], true
		}
		c.enc.WriteField(hpack.HeaderField{Name: name, Value: fields[i+1], Sensitive: sensitive})
	}
	return bytes.Clone(c.hb.Bytes())
}

func (c *client) headers(stream uint32, fields ...string) {
	c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: c.block(fields...), EndStream: true, EndHeaders: true})
}

var get = []string{":method", "GET", ":scheme", "http", ":path", "/", ":authority", "a.example"}

func req(extra ...string) []string { return append(slices.Clone(get), extra...) }

// server reads the guarded bytes as Go's HTTP/2 server does.
type server struct {
	fr        *http2.Framer
	malformed []string
}

func newServer(t *testing.T, b []byte, chunk int) *server {
	t.Helper()
	s := &server{}
	g := New(&chunkConn{chunks: chunked(b, chunk)}, Options{OnMalformed: func(f string) { s.malformed = append(s.malformed, f) }})
	pre := make([]byte, len(Preface))
	if _, err := io.ReadFull(g, pre); err != nil || string(pre) != Preface {
		t.Fatalf("preface: %q, %v", pre, err)
	}
	s.fr = http2.NewFramer(io.Discard, g)
	s.fr.ReadMetaHeaders = hpack.NewDecoder(DefaultHeaderTableSize, nil)
	s.fr.SetMaxReadFrameSize(DefaultMaxFrameSize)
	return s
}

// fields reads the next frame, which must be a request's header block
// or the stream error of a malformed one (nil fields).
func (s *server) fields(t *testing.T, stream uint32) []string {
	t.Helper()
	f, err := s.fr.ReadFrame()
	var se http2.StreamError
	if errors.As(err, &se) {
		if se.StreamID != stream || se.Code != http2.ErrCodeProtocol {
			t.Fatalf("stream error %v, want PROTOCOL_ERROR on stream %d", se, stream)
		}
		return nil
	}
	if err != nil {
		t.Fatalf("ReadFrame: %v", err)
	}
	mh, ok := f.(*http2.MetaHeadersFrame)
	if !ok || mh.StreamID != stream {
		t.Fatalf("frame %v, want the header block of stream %d", f, stream)
	}
	var out []string
	for _, hf := range mh.Fields {
		out = append(out, hf.Name, hf.Value)
	}
	return out
}

// TestMalformedIsStreamError: a request with a connection-specific field
// is the stream error Go's server resets with PROTOCOL_ERROR, whatever
// frames it came in and however the bytes arrived, and the requests
// after it decode as sent: both decoders' tables stayed in step.
func TestMalformedIsStreamError(t *testing.T) {
	for _, tc := range []struct {
		name  string
		bad   []string // the malformed request's extra fields
		field string   // what OnMalformed is told
	}{
		{"connection", []string{"connection", "keep-alive"}, "connection"},
		{"keep-alive", []string{"keep-alive", "timeout=5"}, "keep-alive"},
		{"proxy-connection", []string{"proxy-connection", "close"}, "proxy-connection"},
		{"transfer-encoding", []string{"transfer-encoding", "chunked"}, "transfer-encoding"},
		{"upgrade", []string{"upgrade", "websocket"}, "upgrade"},
		{"te gzip", []string{"te", "trailers, deflate"}, "te"},
		{"two te", []string{"te", "trailers", "te", "trailers"}, "te"},
		{"never indexed", []string{"!connection", "close"}, "connection"},
	} {
		for _, shape := range []string{"one frame", "padded with priority", "three frames"} {
			for _, chunk := range []int{0, 1, 7} {
				t.Run(tc.name+"/"+shape+"/"+string(rune('0'+chunk)), func(t *testing.T) {
					c := newClient()
					c.fr.WriteSettings()
					// Stream 1 puts a field in the tables; stream 3 is
					// malformed and adds one; stream 5 refers to both.
					c.headers(1, req("x-one", "1")...)
					blk := c.block(append(req("x-three", "3"), tc.bad...)...)
					switch shape {
					case "one frame":
						c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: blk, EndStream: true, EndHeaders: true})
					case "padded with priority":
						c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: blk, EndStream: true, EndHeaders: true,
							PadLength: 7, Priority: http2.PriorityParam{Weight: 15}})
					case "three frames":
						a, b := len(blk)/3, 2*len(blk)/3
						c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: blk[:a], EndStream: true})
						c.fr.WriteContinuation(3, false, blk[a:b])
						c.fr.WriteContinuation(3, true, blk[b:])
					}
					c.headers(5, req("x-one", "1", "x-three", "3")...)
					c.fr.WritePing(false, [8]byte{1})

					s := newServer(t, c.buf.Bytes(), chunk)
					if f, err := s.fr.ReadFrame(); err != nil || f.Header().Type != http2.FrameSettings {
						t.Fatalf("first frame %v, %v; want SETTINGS", f, err)
					}
					if got := s.fields(t, 1); !slices.Equal(got, req("x-one", "1")) {
						t.Fatalf("stream 1: %q", got)
					}
					if got := s.fields(t, 3); got != nil {
						t.Fatalf("malformed stream 3 decoded as %q, want a stream error", got)
					}
					if got := s.fields(t, 5); !slices.Equal(got, req("x-one", "1", "x-three", "3")) {
						t.Fatalf("stream 5 after the malformed one: %q", got)
					}
					if f, err := s.fr.ReadFrame(); err != nil || f.Header().Type != http2.FramePing {
						t.Fatalf("last frame %v, %v; want PING", f, err)
					}
					if !slices.Equal(s.malformed, []string{tc.field}) {
						t.Fatalf("OnMalformed told %q, want %q", s.malformed, tc.field)
					}
				})
			}
		}
	}
}

// TestWellFormedUntouched: TE: trailers (gRPC's) and fields that only
// look like connection-specific ones pass as sent.
func TestWellFormedUntouched(t *testing.T) {
	c := newClient()
	fields := req("te", "trailers", "content-type", "application/grpc", "x-connection", "a", "upgrade-insecure-requests", "1")
	c.headers(1, fields...)
	c.headers(3, req("te", "")...)
	s := newServer(t, c.buf.Bytes(), 0)
	if got := s.fields(t, 1); !slices.Equal(got, fields) {
		t.Fatalf("got %q", got)
	}
	if got := s.fields(t, 3); !slices.Equal(got, req("te", "")) {
		t.Fatalf("got %q", got)
	}
	if len(s.malformed) != 0 {
		t.Fatalf("OnMalformed told %q", s.malformed)
	}
}

// TestRepeatedSettings: a SETTINGS frame that sets a parameter twice
// reaches the server with each parameter once at its last value, in
// order — unless a value is invalid, which is what the server gets.
func TestRepeatedSettings(t *testing.T) {
	for _, tc := range []struct {
		name      string
		sent, got []http2.Setting
		refused   http2.ErrCode // the framer's connection error, if any
	}{
		{"window twice", []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 100}, {ID: http2.SettingInitialWindowSize, Val: 1}},
			[]http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 1}}, 0},
		{"interleaved", []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 100}, {ID: http2.SettingMaxFrameSize, Val: 20000},
			{ID: http2.SettingInitialWindowSize, Val: 7}, {ID: http2.SettingHeaderTableSize, Val: 0}},
			[]http2.Setting{{ID: http2.SettingMaxFrameSize, Val: 20000}, {ID: http2.SettingInitialWindowSize, Val: 7}, {ID: http2.SettingHeaderTableSize, Val: 0}}, 0},
		{"no repeat", []http2.Setting{{ID: http2.SettingEnablePush, Val: 0}, {ID: http2.SettingMaxConcurrentStreams, Val: 10}},
			[]http2.Setting{{ID: http2.SettingEnablePush, Val: 0}, {ID: http2.SettingMaxConcurrentStreams, Val: 10}}, 0},
		{"an invalid value first", []http2.Setting{{ID: http2.SettingEnablePush, Val: 5}, {ID: http2.SettingEnablePush, Val: 0}},
			[]http2.Setting{{ID: http2.SettingEnablePush, Val: 5}}, 0},
		{"an invalid window last", []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 10}, {ID: http2.SettingInitialWindowSize, Val: 1 << 31}},
			nil, http2.ErrCodeFlowControl},
		{"unknown parameters", []http2.Setting{{ID: 0xf0, Val: 1}, {ID: 0xf0, Val: 2}, {ID: 0xf1, Val: 3}},
			[]http2.Setting{{ID: 0xf0, Val: 2}, {ID: 0xf1, Val: 3}}, 0},
	} {
		for _, chunk := range []int{0, 1, 5} {
			t.Run(tc.name, func(t *testing.T) {
				c := newClient()
				c.fr.WriteSettings(tc.sent...)
				c.fr.WriteSettingsAck()
				c.headers(1, get...)
				s := newServer(t, c.buf.Bytes(), chunk)
				f, err := s.fr.ReadFrame()
				if tc.refused != 0 {
					if err != http2.ConnectionError(tc.refused) {
						t.Fatalf("ReadFrame: %v, %v; want the connection error %v", f, err, tc.refused)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				sf := f.(*http2.SettingsFrame)
				var got []http2.Setting
				sf.ForeachSetting(func(s http2.Setting) error { got = append(got, s); return nil })
				if !slices.Equal(got, tc.got) {
					t.Fatalf("server got %v, want %v", got, tc.got)
				}
				if f, err := s.fr.ReadFrame(); err != nil || !f.(*http2.SettingsFrame).IsAck() {
					t.Fatalf("then %v, %v; want the ACK", f, err)
				}
				if got := s.fields(t, 1); !slices.Equal(got, get) {
					t.Fatalf("then %q", got)
				}
			})
		}
	}
}

// TestBytesPassIntact: whatever a well-formed client sends — large DATA
// frames, padded frames, settings without repeats — reaches the reader
// byte for byte, however it is cut on the wire and however much the
// reader asks for at a time.
func TestBytesPassIntact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		c := newClient()
		c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
		for i := range 1 + rng.IntN(8) {
			id := uint32(2*i + 1)
			c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.block(req("x-n", string(rune('a'+i)))...), EndHeaders: true})
			for range rng.IntN(3) {
				body := make([]byte, rng.IntN(DefaultMaxFrameSize+1))
				for j := range body {
					body[j] = byte(rng.Uint32())
				}
				if rng.IntN(4) == 0 {
					c.fr.WriteDataPadded(id, false, body[:min(len(body), DefaultMaxFrameSize-256)], make([]byte, rng.IntN(200)))
				} else {
					c.fr.WriteData(id, false, body)
				}
			}
			c.fr.WriteData(id, true, nil)
			c.fr.WriteWindowUpdate(0, uint32(1+rng.IntN(1000)))
			c.fr.WritePing(false, [8]byte{byte(i)})
		}
		want := c.buf.Bytes()
		var cuts [][]byte
		for rest := want; len(rest) > 0; {
			k := min(len(rest), 1+rng.IntN(20000))
			cuts = append(cuts, rest[:k])
			rest = rest[k:]
		}
		g := New(&chunkConn{chunks: cuts}, Options{})
		var got []byte
		for {
			p := make([]byte, 1+rng.IntN(20000))
			n, err := g.Read(p)
			got = append(got, p[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("round %d: %d bytes read, %d sent, or they differ", round, len(got), len(want))
		}
	}
}

// TestHeldFrameWithoutEnd: a connection whose held frame never completes
// reports the read error, not a hang or a partial frame as whole.
func TestHeldFrameWithoutEnd(t *testing.T) {
	c := newClient()
	c.headers(1, get...)
	b := c.buf.Bytes()
	g := New(&chunkConn{chunks: [][]byte{b[:len(b)-2]}}, Options{HeaderTimeout: time.Minute})
	defer g.Close()
	got, err := io.ReadAll(g)
	if err != nil {
		t.Fatal(err)
	}
	if want := len(Preface); len(got) != want {
		t.Fatalf("read %d bytes, want the preface's %d only", len(got), want)
	}
}
