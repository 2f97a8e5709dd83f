package dataplane

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"weft.dev/weft/internal/xds/contract"
)

// BenchmarkWebSocketEcho measures a WebSocket message round trip (1 KiB
// text, echoed by a gorilla/websocket server) on one open WebSocket,
// directly to the server and through one proxy hop, side by side over
// real loopback sockets: the cost of the tunnel's copies per message.
func BenchmarkWebSocketEcho(b *testing.B) {
	addr := wsUpstream(b)
	d := newDataplane(b, contract.Identity{}, nil)
	mustApply(b, d, resourcesAny(staticCluster(b, "ws", addr), wsListener(b, nil, nil)))
	msg := bytes.Repeat([]byte("x"), 1024)
	for _, tc := range []struct{ name, addr string }{{"direct", addr}, {"proxy", d.ListenerAddr("out").String()}} {
		b.Run(tc.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, _, err := websocket.DefaultDialer.DialContext(ctx, "ws://"+tc.addr+"/ws", http.Header{"Host": {"svc"}})
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				if err := c.WriteMessage(websocket.TextMessage, msg); err != nil {
					b.Fatal(err)
				}
				if _, got, err := c.ReadMessage(); err != nil || len(got) != len(msg) {
					b.Fatalf("echo: %d bytes, %v", len(got), err)
				}
			}
		})
	}
}
