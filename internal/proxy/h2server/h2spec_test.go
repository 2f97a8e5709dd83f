package h2server

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"

	"weft.dev/weft/internal/testenv"
)

// TestH2Spec runs h2spec, the HTTP/2 conformance suite, against the
// server alone (h2c, prior knowledge), with a handler that reads the
// request's body before it answers, as a proxy does. The dataplane's
// TestH2Spec runs it against the listeners (h2c and TLS) too.
func TestH2Spec(t *testing.T) {
	if testing.Short() {
		t.Skip("h2spec runs 145 cases")
	}
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})})
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	testenv.CheckH2Spec(t, testenv.H2Spec(t, uint16(p), false), nil) // no known failure
}
