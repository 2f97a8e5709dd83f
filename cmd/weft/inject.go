package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"

	"weft.dev/weft/internal/inject"
)

func newInjectCmd() *cobra.Command {
	var (
		file       string
		cfg        inject.Config
		pullPolicy string
	)
	cmd := &cobra.Command{
		Use:   "inject -f FILE|-",
		Short: "Add Weft's sidecar to the pod templates of Kubernetes manifests (as istioctl kube-inject)",
		Long: `Read Kubernetes manifests (YAML or JSON, several documents) from FILE, or
stdin for -, and write them to stdout as YAML with Weft's sidecar added to
every Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob and Pod:
the same result as the control plane's injection webhook (see
docs/kubernetes.md). Every workload is injected whatever its namespace's
labels; a pod that opts out (sidecar.istio.io/inject: "false"), asks for
another revision or uses the host network is written unchanged, and named
on stderr. Other kinds are written unchanged.`,
		Example: `  weft inject -f deploy.yaml | kubectl apply -f -
  kubectl get deploy reviews -o yaml | weft inject -f - --image registry.example/weft-proxy:1.0`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return fmt.Errorf("-f FILE (or - for stdin) is required")
			}
			switch corev1.PullPolicy(pullPolicy) {
			case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
				cfg.ImagePullPolicy = corev1.PullPolicy(pullPolicy)
			default:
				return fmt.Errorf("--image-pull-policy %q: want Always, IfNotPresent or Never", pullPolicy)
			}
			var in io.Reader = cmd.InOrStdin()
			if file != "-" {
				f, err := os.Open(file)
				if err != nil {
					return err
				}
				defer f.Close()
				in = f
			}
			errOut := cmd.ErrOrStderr()
			err := inject.InjectYAML(in, cmd.OutOrStdout(), cfg, func(what, why string) {
				fmt.Fprintf(errOut, "weft inject: %s not injected: %s\n", what, why)
			})
			if err != nil && file != "-" {
				return fmt.Errorf("%s: %w", file, err)
			}
			return err
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&file, "filename", "f", "", "manifests to inject, `FILE` or - for stdin")
	fs.StringVar(&cfg.Image, "image", inject.DefaultImage, "weft-proxy image for the added containers")
	fs.StringVar(&pullPolicy, "image-pull-policy", "", "imagePullPolicy of the added containers (default: Kubernetes')")
	fs.StringVar(&cfg.XDSAddress, "xds-address", inject.DefaultXDSAddress, "the control plane's secure port as pods reach it, `host:port`")
	fs.StringVar(&cfg.Revision, "revision", "", "the revision to inject for (pods asking another istio.io/rev are left alone)")
	fs.StringVar(&cfg.TrustDomain, "trust-domain", "", "trust domain of workload identities (default: weft-proxy's, cluster.local)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", 0, "weft-proxy --drain-timeout for every pod (proxy.istio.io/config terminationDrainDuration overrides it; 0: weft-proxy's default)")
	return cmd
}
