package forward

import (
	"crypto/tls"
	"net/http"
	"testing"

	"weft.dev/weft/internal/proxy/filter"
)

// TestXFCC: x-forwarded-client-cert as Envoy's connection manager
// leaves it, for each forward_client_cert_details mode, over mutual TLS
// and in plaintext.
func TestXFCC(t *testing.T) {
	f := &Forwarder{principal: "spiffe://cluster.local/ns/default/sa/server"}
	mtls := &Downstream{Conn: filter.Connection{TLS: &tls.ConnectionState{}, Peer: &filter.PeerCertificate{
		Principal: "spiffe://cluster.local/ns/default/sa/client", URISANs: []string{"spiffe://cluster.local/ns/default/sa/client"},
		DNSSANs: []string{"a.example", "b.example"}, Subject: "CN=client,O=example", Hash: "abc123"}}}
	noURI := &Downstream{Conn: filter.Connection{TLS: &tls.ConnectionState{}, Peer: &filter.PeerCertificate{Hash: "def"}}}
	plain := &Downstream{}
	const sent = "By=spiffe://upstream;URI=spiffe://caller"
	all := DetailSubject | DetailURI | DetailDNS
	for _, tc := range []struct {
		name    string
		mode    ForwardClientCert
		details ClientCertDetails
		ds      *Downstream
		in      []string
		want    []string
	}{
		{"append, Istio's sidecar inbound", AppendForward, all, mtls, []string{sent},
			[]string{sent + `,By=spiffe://cluster.local/ns/default/sa/server;Hash=abc123;Subject="CN=client,O=example";URI=spiffe://cluster.local/ns/default/sa/client;DNS=a.example;DNS=b.example`}},
		{"append, none sent", AppendForward, DetailURI, mtls, nil,
			[]string{"By=spiffe://cluster.local/ns/default/sa/server;Hash=abc123;URI=spiffe://cluster.local/ns/default/sa/client"}},
		{"sanitize set", SanitizeSet, DetailSubject | DetailURI, noURI, []string{sent},
			[]string{`By=spiffe://cluster.local/ns/default/sa/server;Hash=def;Subject="";URI=`}},
		{"forward only", ForwardOnly, all, mtls, []string{sent}, []string{sent}},
		{"sanitize", Sanitize, all, mtls, []string{sent}, nil},
		{"append, plaintext: removed", AppendForward, all, plain, []string{sent}, nil},
		{"forward only, plaintext: removed", ForwardOnly, all, plain, []string{sent}, nil},
		{"always forward only, plaintext", AlwaysForwardOnly, all, plain, []string{sent}, []string{sent}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.in != nil {
				h[xfccHeader] = tc.in
			}
			l := &Listener{ForwardClientCert: tc.mode, ClientCertDetails: tc.details}
			for range 2 { // the second time from the connection's cache
				hh := h.Clone()
				f.mutateXFCC(hh, l, tc.ds)
				if got := hh[xfccHeader]; len(got) != len(tc.want) || (len(got) == 1 && got[0] != tc.want[0]) {
					t.Fatalf("XFCC = %q, want %q", got, tc.want)
				}
			}
		})
	}
}
