package h2wire

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The frames appended read back with x/net's framer as they were meant.
func TestFramesReadBack(t *testing.T) {
	var enc bytes.Buffer
	e := hpack.NewEncoder(&enc)
	e.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	e.WriteField(hpack.HeaderField{Name: "x-long", Value: strings.Repeat("v", 40<<10)})
	block := enc.Bytes()

	var b []byte
	b = AppendSettings(b, []http2.Setting{{ID: http2.SettingMaxConcurrentStreams, Val: 7}})
	b = AppendSettingsAck(b)
	b = AppendWindowUpdate(b, 3, 1000)
	b = AppendRST(b, 5, http2.ErrCodeCancel)
	b = AppendPing(b, true, [8]byte{1, 2, 3, 4, 5, 6, 7, 8})
	b = AppendHeaders(b, 7, true, block, 16<<10) // HEADERS and two CONTINUATIONs
	b = AppendGoAway(b, 7, http2.ErrCodeNo, "bye")

	fr := http2.NewFramer(nil, bytes.NewReader(b))
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = 1 << 20
	var got []string
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			break
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				got = append(got, "settings ack")
			} else {
				v, _ := f.Value(http2.SettingMaxConcurrentStreams)
				got = append(got, "settings "+string(rune('0'+v)))
			}
		case *http2.WindowUpdateFrame:
			got = append(got, "window")
			if f.StreamID != 3 || f.Increment != 1000 {
				t.Errorf("window update %d +%d", f.StreamID, f.Increment)
			}
		case *http2.RSTStreamFrame:
			got = append(got, "rst "+f.ErrCode.String())
		case *http2.PingFrame:
			got = append(got, "ping")
			if !f.IsAck() || f.Data != [8]byte{1, 2, 3, 4, 5, 6, 7, 8} {
				t.Errorf("ping %v", f)
			}
		case *http2.MetaHeadersFrame:
			got = append(got, "headers")
			if !f.StreamEnded() || f.PseudoValue("status") != "200" || len(f.RegularFields()) != 1 || len(f.RegularFields()[0].Value) != 40<<10 {
				t.Errorf("headers frame: ended %v, %d fields", f.StreamEnded(), len(f.Fields))
			}
		case *http2.GoAwayFrame:
			got = append(got, "goaway")
			if f.LastStreamID != 7 || string(f.DebugData()) != "bye" {
				t.Errorf("goaway %d %q", f.LastStreamID, f.DebugData())
			}
		}
	}
	want := "settings 7,settings ack,window,rst CANCEL,ping,headers,goaway"
	if strings.Join(got, ",") != want {
		t.Fatalf("read %v\nwant %s", got, want)
	}
}

func TestUnpad(t *testing.T) {
	for _, tc := range []struct {
		flags http2.Flags
		in    string
		out   string
		ok    bool
	}{
		{0, "abc", "abc", true},
		{http2.FlagDataPadded, "\x02abcXY", "abc", true},
		{http2.FlagDataPadded, "\x00", "", true},
		{http2.FlagDataPadded, "\x03ab", "", false},
		{http2.FlagDataPadded, "", "", false},
	} {
		out, ok := Unpad(tc.flags, []byte(tc.in))
		if ok != tc.ok || string(out) != tc.out {
			t.Errorf("Unpad(%q) = %q, %v", tc.in, out, ok)
		}
	}
}

func TestFields(t *testing.T) {
	req := []string{":method", "GET", ":scheme", "https", ":path", "/", ":authority", "a"}
	for _, tc := range []struct {
		fields    []string
		malformed bool
	}{
		{req, false},
		{append(req, "te", "trailers", "x-a", "b"), false},
		{[]string{":method", "CONNECT", ":authority", "a:443"}, false},
		{[]string{":method", "CONNECT", ":authority", "a:443", ":path", "/"}, true},
		{[]string{":method", "GET", ":path", "/"}, true},                                  // no scheme
		{[]string{":method", "GET", ":scheme", "ftp", ":path", "/"}, true},                // not http(s)
		{[]string{":method", "GET", ":scheme", "http", ":path", "/", ":path", "/"}, true}, // twice
		{append(req, ":protocol", "websocket"), true},
		{append(req, "x-a", "b", ":method", "GET"), true}, // pseudo after regular
		{append(req, "X-Upper", "b"), true},
		{append(req, "connection", "close"), true},
		{append(req, "te", "gzip"), true},
		{append(req, "x-bad", "a\nb"), true},
		{[]string{":method", "GET", ":scheme", "http", ":path", "/", ":authority", "u@h"}, true},
	} {
		var f Fields
		f.Reset(1 << 20)
		for i := 0; i < len(tc.fields); i += 2 {
			f.Add(hpack.HeaderField{Name: tc.fields[i], Value: tc.fields[i+1]})
		}
		f.CheckRequest()
		if (f.Malformed != "") != tc.malformed {
			t.Errorf("%v: malformed %q", tc.fields, f.Malformed)
		}
	}
	var f Fields
	f.Reset(100)
	f.Add(hpack.HeaderField{Name: "x-a", Value: strings.Repeat("b", 100)})
	if !f.TooLarge {
		t.Error("a block over its limit is not TooLarge")
	}
}

// Control frames queued while a write holds the connection go out after
// it; queued ones go out ahead of the next write.
func TestWriterOrdersControlFrames(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	var failed error
	w := NewWriter(a, 1<<10, func(err error) { failed = err })
	var got bytes.Buffer
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 64)
		for got.Len() < 6 {
			n, err := b.Read(buf)
			if err != nil {
				return
			}
			got.Write(buf[:n])
		}
	})
	w.wmu.Lock() // a write under way
	w.Queue([]byte("c1"))
	w.wmu.Unlock()
	if err := w.Write([]byte("dd")); err != nil {
		t.Fatal(err)
	}
	w.Queue([]byte("c2"))
	wg.Wait()
	if got.String() != "c1ddc2" || failed != nil {
		t.Fatalf("wrote %q (%v)", got.String(), failed)
	}
	w.wmu.Lock()
	w.Queue(make([]byte, 2<<10))
	w.wmu.Unlock()
	if !errors.Is(failed, ErrPeerNotReading) {
		t.Fatalf("over the limit: %v", failed)
	}
}

// TestFrameBuffered: true only while a frame's header and its whole
// payload are in the reader's buffer.
func TestFrameBuffered(t *testing.T) {
	frames := AppendPing(nil, false, [8]byte{1})
	frames = AppendWindowUpdate(frames, 0, 1000)
	for cut := 0; cut <= len(frames); cut++ {
		br := bufio.NewReaderSize(bytes.NewReader(frames[:cut]), 64)
		if cut > 0 {
			br.Peek(cut) // fill the buffer with what there is
		}
		want := cut >= 17
		if got := FrameBuffered(br); got != want {
			t.Errorf("%d bytes buffered: FrameBuffered = %v, want %v", cut, got, want)
		}
	}
	br := bufio.NewReaderSize(bytes.NewReader(frames), 64)
	br.Peek(len(frames))
	br.Discard(17) // the PING read: the WINDOW_UPDATE is whole
	if !FrameBuffered(br) {
		t.Error("second frame whole, FrameBuffered = false")
	}
	br.Discard(1)
	if FrameBuffered(br) {
		t.Error("a frame's header cut: FrameBuffered = true")
	}
}
