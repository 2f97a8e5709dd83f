package forward

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"

	"weft.dev/weft/internal/proxy/filter"
	"weft.dev/weft/internal/proxy/telemetry"
)

// Downstream is the connection a request arrived on, as the request path
// sees it: what the filters see of it (Conn), and what the connection
// manager derives from it once — the destination-side security metric
// labels and the x-forwarded-client-cert element of its client
// certificate. Built once per connection by NewDownstream; shared by the
// connection's requests.
type Downstream struct {
	Conn filter.Connection
	// Socket is the address the connection arrived on, before
	// use_original_dst restored Conn.LocalAddr (the same when it did
	// not): an ORIGINAL_DST cluster never sends there, which would loop
	// back into the listener. Set by the listener before the first
	// request; zero when unknown.
	Socket netip.AddrPort
	// Ctx ends when the listener the connection was accepted on closes
	// (its drain is over, or the proxy shuts down): an upgraded
	// connection (a WebSocket) ends with it. Set by the listener before
	// the first request; nil: the request's context, without its
	// cancellation.
	Ctx  context.Context
	sec  *telemetry.SecLabels
	xfcc atomic.Pointer[xfccElement] // the last rendered element
}

// NewDownstream describes a connection the proxy accepted: conn as the
// filters see it, its TLS handshake done. Call it once per connection,
// not per request (it takes a lock to intern the connection's metric
// labels).
func (f *Forwarder) NewDownstream(conn filter.Connection) *Downstream {
	d := &Downstream{Conn: conn, sec: f.metrics.NoneSec()}
	if p := conn.Peer; p != nil && conn.TLS != nil {
		d.sec = f.metrics.InternSec(telemetry.SecLabels{Policy: telemetry.PolicyMutualTLS,
			SourcePrincipal: telemetry.OrUnknown(p.Principal), DestinationPrincipal: telemetry.OrUnknown(f.principal)})
	}
	return d
}

// plaintextDownstream stands for a connection nothing is known of (a
// caller of Serve that passed none).
var plaintextDownstream = &Downstream{}

// ForwardClientCert is the HTTP connection manager's
// forward_client_cert_details: what happens to x-forwarded-client-cert.
type ForwardClientCert uint8

// The modes, as Envoy's. Every mode but AlwaysForwardOnly removes the
// header from a request that did not come over mutual TLS.
const (
	// Sanitize (Envoy's default) removes the header.
	Sanitize ForwardClientCert = iota
	// ForwardOnly forwards the header as it came.
	ForwardOnly
	// AppendForward appends the client certificate's element to it.
	AppendForward
	// SanitizeSet replaces it with the client certificate's element.
	SanitizeSet
	// AlwaysForwardOnly forwards the header as it came, even in plaintext.
	AlwaysForwardOnly
)

// ClientCertDetails are set_current_client_cert_details: what the
// element says of the client certificate besides By= and Hash=.
type ClientCertDetails uint8

// The details, as bits.
const (
	DetailSubject ClientCertDetails = 1 << iota
	DetailURI
	DetailDNS
	DetailCert
	DetailChain
)

// xfccHeader is x-forwarded-client-cert as net/http keys it.
const xfccHeader = "X-Forwarded-Client-Cert"

type xfccElement struct {
	details ClientCertDetails
	s       string
	hv      []string // {s}
}

// mutateXFCC applies the listener's forward_client_cert_details to the
// request's headers, as Envoy's connection manager does before the
// filters run.
func (f *Forwarder) mutateXFCC(h http.Header, l *Listener, ds *Downstream) {
	mode := l.ForwardClientCert
	if mode == AlwaysForwardOnly {
		return
	}
	if mode == Sanitize || ds.Conn.Peer == nil {
		if _, ok := h[xfccHeader]; ok {
			delete(h, xfccHeader)
		}
		return
	}
	if mode == ForwardOnly {
		return
	}
	el := ds.xfccFor(f.principal, l.ClientCertDetails)
	if v := h[xfccHeader]; mode == AppendForward && len(v) > 0 {
		h[xfccHeader] = []string{strings.Join(v, ",") + "," + el.s}
		return
	}
	h[xfccHeader] = el.hv // shared: header values are never modified in place
}

// xfccFor is the connection's XFCC element for details, rendered once
// and kept (a connection's requests all ask for the same details unless
// its listener changes).
func (d *Downstream) xfccFor(by string, details ClientCertDetails) *xfccElement {
	if e := d.xfcc.Load(); e != nil && e.details == details {
		return e
	}
	s := renderXFCC(by, d.Conn.Peer, d.Conn.TLS.PeerCertificates, details)
	e := &xfccElement{details: details, s: s, hv: []string{s}}
	d.xfcc.Store(e)
	return e
}

// renderXFCC is Envoy's element for one client certificate: By= (the
// proxy's own URI SAN), Hash= (hex SHA-256 of the client certificate),
// then as details ask, in Envoy's order, Cert= and Chain= (URL-encoded
// PEM, quoted), Subject= (quoted, present even when empty), URI= (one per
// URI SAN; present, empty, when there is none) and DNS= (one per DNS SAN).
func renderXFCC(by string, p *filter.PeerCertificate, chain []*x509.Certificate, details ClientCertDetails) string {
	var parts []string
	if by != "" {
		parts = append(parts, "By="+by)
	}
	if p.Hash != "" {
		parts = append(parts, "Hash="+p.Hash)
	}
	if details&DetailCert != 0 && len(chain) > 0 {
		parts = append(parts, `Cert="`+url.PathEscape(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: chain[0].Raw})))+`"`)
	}
	if details&DetailChain != 0 && len(chain) > 0 {
		var b []byte
		for _, c := range chain {
			b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		parts = append(parts, `Chain="`+url.PathEscape(string(b))+`"`)
	}
	if details&DetailSubject != 0 {
		parts = append(parts, `Subject="`+p.Subject+`"`)
	}
	if details&DetailURI != 0 {
		if len(p.URISANs) == 0 {
			parts = append(parts, "URI=")
		}
		for _, u := range p.URISANs {
			parts = append(parts, "URI="+u)
		}
	}
	if details&DetailDNS != 0 {
		for _, d := range p.DNSSANs {
			parts = append(parts, "DNS="+d)
		}
	}
	return strings.Join(parts, ";")
}
