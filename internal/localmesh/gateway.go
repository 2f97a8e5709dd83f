package localmesh

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"weft.dev/weft/internal/proxy"
	"weft.dev/weft/internal/proxy/xdsclient"
	"weft.dev/weft/internal/xds/contract"
)

// GatewayOptions describe a gateway proxy (weft-proxy --gateway): no app
// behind it, listeners from the Gateways whose selector matches Labels,
// bound on IP.
type GatewayOptions struct {
	Name      string
	Namespace string // default "default"
	Labels    map[string]string
	// IP is the gateway's address: its listeners and admin endpoint bind
	// there.
	IP string
	// CredentialDir holds the credentials its Gateways name
	// (credentialName); CredentialPoll how often it is read again.
	CredentialDir  string
	CredentialPoll time.Duration
	// ControlPlane issues its token and gives its trust root.
	ControlPlane *ControlPlane
	Logger       *slog.Logger
}

// Gateway is a running gateway proxy.
type Gateway struct {
	Opts  GatewayOptions
	Proxy *proxy.Proxy
	r     *runner
}

// StartGateway starts a gateway proxy against o.ControlPlane's secure
// port, its identity a service account named after it.
func StartGateway(o GatewayOptions) (*Gateway, error) {
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ControlPlane == nil || o.IP == "" {
		return nil, fmt.Errorf("gateway %s: a control plane and an IP are required", o.Name)
	}
	tok, err := o.ControlPlane.IssueToken(o.Namespace, o.Name, 0)
	if err != nil {
		return nil, fmt.Errorf("gateway %s: %w", o.Name, err)
	}
	admin, err := FreePort(o.IP)
	if err != nil {
		return nil, err
	}
	p, err := proxy.New(proxy.Options{
		Identity: contract.Identity{
			ID:             contract.RouterNodeID(o.IP, o.Name, o.Namespace),
			Namespace:      o.Namespace,
			WorkloadName:   o.Name,
			Labels:         o.Labels,
			IPs:            []string{o.IP},
			ServiceAccount: o.Name,
			GatewayBind:    o.IP,
		},
		XDSAddress:     o.ControlPlane.XDSAddr().String(),
		RootCertPEM:    o.ControlPlane.RootCertPEM(),
		TrustDomain:    o.ControlPlane.TrustDomain(),
		Token:          func() (string, error) { return tok, nil },
		AdminAddress:   net.JoinHostPort(o.IP, strconv.Itoa(admin)),
		Logger:         o.Logger.With("gateway", o.Name),
		CredentialDir:  o.CredentialDir,
		CredentialPoll: o.CredentialPoll,
		XDS:            xdsclient.Options{},
	})
	if err != nil {
		return nil, fmt.Errorf("gateway %s: %w", o.Name, err)
	}
	return &Gateway{Opts: o, Proxy: p, r: start(p.Run)}, nil
}

// Stop stops the gateway.
func (g *Gateway) Stop() error { return g.r.stop() }
