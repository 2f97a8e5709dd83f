package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"weft.dev/weft/internal/xds/contract"
)

// grpcBootstrapOptions say which workload a gRPC xDS bootstrap is for.
type grpcBootstrapOptions struct {
	XDSAddress     string
	Namespace      string
	Workload       string
	ServiceAccount string
	IP             string
	Labels         string
	Locality       string
	NodeID         string
}

func newGRPCBootstrapCmd() *cobra.Command {
	var (
		o   grpcBootstrapOptions
		out string
	)
	cmd := &cobra.Command{
		Use:   "grpc-bootstrap --xds-address ADDR --namespace NS --workload NAME",
		Short: "Print a gRPC xDS bootstrap (GRPC_XDS_BOOTSTRAP) for a proxyless gRPC workload",
		Long: `Print the xDS bootstrap file a gRPC application reads from the file named by
GRPC_XDS_BOOTSTRAP, so that its channels to xds:///host:port targets take
their routes, clusters and endpoints from Weft, without a sidecar.

The node carries the workload's identity as a weft-proxy's does (namespace,
workload, labels, service account, addresses, locality) and
GENERATOR=grpc, which tells the control plane it is a proxyless gRPC client
(docs/control-plane.md, "Proxyless gRPC").

The control plane is reached without TLS: --xds-address must be the
plaintext ADS port of weft serve (--xds-plaintext-address); the secure port
needs a workload certificate, which proxyless clients do not get yet.`,
		Example: `  weft serve --config mesh/ --xds-plaintext-address 127.0.0.1:15010 &
  weft grpc-bootstrap --xds-address 127.0.0.1:15010 --namespace shop --workload client > bootstrap.json
  GRPC_XDS_BOOTSTRAP=bootstrap.json ./client   # dials xds:///backend:8080`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := grpcBootstrap(o)
			if err != nil {
				return err
			}
			if out != "" {
				if err := os.WriteFile(out, b, 0o644); err != nil {
					return fmt.Errorf("--output: %w", err)
				}
				return nil
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.XDSAddress, "xds-address", "127.0.0.1:15010", "host:port of the control plane's plaintext ADS port (weft serve --xds-plaintext-address)")
	f.StringVar(&o.Namespace, "namespace", "default", "the workload's namespace: short service names in dial targets resolve in it")
	f.StringVar(&o.Workload, "workload", "", "the workload's name (required)")
	f.StringVar(&o.ServiceAccount, "service-account", "", "the workload's service account (default: the workload name)")
	f.StringVar(&o.IP, "ip", "127.0.0.1", "the workload's address, for the node id and INSTANCE_IPS")
	f.StringVar(&o.Labels, "labels", "", "the workload's labels, k=v,k=v (VirtualService sourceLabels match them)")
	f.StringVar(&o.Locality, "locality", "", "the workload's locality, region/zone/subzone (locality load balancing is relative to it)")
	f.StringVar(&o.NodeID, "node-id", "", "the xDS node id (default: sidecar~IP~WORKLOAD.NS~NS.svc.cluster.local, as Istio's)")
	f.StringVarP(&out, "output", "o", "", "write the bootstrap to this file instead of stdout")
	return cmd
}

// grpcBootstrap renders the bootstrap JSON (gRFC A27's format, as
// grpc-go, grpc-java and grpc-core read it).
func grpcBootstrap(o grpcBootstrapOptions) ([]byte, error) {
	if o.Workload == "" {
		return nil, fmt.Errorf("--workload is required")
	}
	if o.Namespace == "" {
		return nil, fmt.Errorf("--namespace must not be empty")
	}
	if _, _, err := net.SplitHostPort(o.XDSAddress); err != nil {
		return nil, fmt.Errorf("--xds-address %q: want host:port: %w", o.XDSAddress, err)
	}
	if net.ParseIP(o.IP) == nil {
		return nil, fmt.Errorf("--ip %q: not an IP address", o.IP)
	}
	labels, err := parseLabels(o.Labels)
	if err != nil {
		return nil, err
	}
	if o.ServiceAccount == "" {
		o.ServiceAccount = o.Workload
	}
	if o.NodeID == "" {
		o.NodeID = contract.DefaultNodeID(o.IP, o.Workload, o.Namespace)
	}
	id := contract.Identity{
		ID:             o.NodeID,
		Namespace:      o.Namespace,
		WorkloadName:   o.Workload,
		Labels:         labels,
		IPs:            []string{o.IP},
		ServiceAccount: o.ServiceAccount,
		Locality:       o.Locality,
		Generator:      contract.GeneratorGRPC,
	}
	node, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(id.Node())
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	type creds struct {
		Type string `json:"type"`
	}
	type server struct {
		URI      string   `json:"server_uri"`
		Creds    []creds  `json:"channel_creds"`
		Features []string `json:"server_features"`
	}
	b, err := json.MarshalIndent(struct {
		Servers []server        `json:"xds_servers"`
		Node    json.RawMessage `json:"node"`
	}{
		Servers: []server{{URI: o.XDSAddress, Creds: []creds{{Type: "insecure"}}, Features: []string{"xds_v3"}}},
		Node:    node,
	}, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
