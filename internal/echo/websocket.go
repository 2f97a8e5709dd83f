package echo

import (
	"net/http"

	"github.com/gorilla/websocket"
)

// WebSocketPath is where the app accepts WebSocket connections: every
// message it receives on one is sent back, same type, same bytes, until
// the client closes.
const WebSocketPath = "/ws"

// MaxWebSocketMessage bounds one message the app echoes.
const MaxWebSocketMessage = 16 << 20

var wsUpgrader = websocket.Upgrader{
	// Clients come through proxies with any Host; the app has no
	// cookies to protect.
	CheckOrigin: func(*http.Request) bool { return true },
}

// serveWebSocket takes over r's connection as a WebSocket and echoes it.
// The connection is tracked as hijacked, so Close ends it.
func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	w.Header().Set("X-Echo-Name", s.name)
	c, err := wsUpgrader.Upgrade(w, r, http.Header{"X-Echo-Name": {s.name}, "X-Echo-Version": {s.version}})
	if err != nil {
		return // the upgrader answered 400
	}
	defer c.Close()
	c.SetReadLimit(MaxWebSocketMessage)
	for {
		typ, msg, err := c.ReadMessage()
		if err != nil {
			if ce, ok := err.(*websocket.CloseError); ok {
				// Answer the client's close, as RFC 6455 asks.
				c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(ce.Code, ""))
			}
			return
		}
		if err := c.WriteMessage(typ, msg); err != nil {
			return
		}
	}
}
