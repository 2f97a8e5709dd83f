package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	meshconfig "istio.io/api/mesh/v1alpha1"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/controlplane"
	"weft.dev/weft/internal/echo"
)

// TestIstioPathNormalization runs the cases of Istio's
// tests/integration/security/normalization_test.go: for each mesh config
// pathNormalization, the request target a client sends through its
// sidecar and the one the app behind the server's sidecar receives ("400":
// refused). Requests are written raw on a socket, so the target reaches
// the sidecar exactly as written.
func TestIstioPathNormalization(t *testing.T) {
	type expect struct{ in, out string }
	var percentEncoded []expect
	for i := 1; i <= 0xff; i++ {
		in := fmt.Sprintf("/admin%%%.2x", i)
		out := in
		if c := byte(i); c == '-' || c == '.' || c == '/' || c == '\\' || c == '_' || c == '~' ||
			'0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' {
			out, _ = url.PathUnescape(in)
			out = strings.ReplaceAll(out, `\`, `/`)
		}
		percentEncoded = append(percentEncoded, expect{in, out})
	}
	common := func(base, merge, decode []expect) []expect { return append(append(base, merge...), decode...) }
	modes := []struct {
		mode  meshconfig.MeshConfig_ProxyPathNormalization_NormalizationType
		cases []expect
	}{
		{meshconfig.MeshConfig_ProxyPathNormalization_NONE, []expect{
			{"/", "/"}, {"/app/", "/app/"}, {"/app/../admin", "/app/../admin"}, {"/app", "/app"}, {"/app//", "/app//"},
			{"/app/%2f", "/app/%2f"}, {"/app%2f/", "/app%2f/"}, {"/xyz%30..//abc", "/xyz%30..//abc"},
			{"/app/%2E./admin", "/app/%2E./admin"}, {`/app\admin`, `/app\admin`}, {`/app/\/\/\admin`, `/app/\/\/\admin`},
			{`/%2Fapp%5cadmin%5Cabc`, `/%2Fapp%5cadmin%5Cabc`},
			{`/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc`, `/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc`},
			{`/app//../admin`, `/app//../admin`}, {`/app//../../admin`, `/app//../../admin`},
		}},
		{meshconfig.MeshConfig_ProxyPathNormalization_BASE, []expect{
			{"/", "/"}, {"/app/", "/app/"}, {"/app/../admin", "/admin"}, {"/app", "/app"}, {"/app//", "/app//"},
			{"/app/%2f", "/app/%2f"}, {"/app%2f/", "/app%2f/"}, {"/xyz%30..//abc", "/xyz0..//abc"},
			{"/app/%2E./admin", "/admin"}, {`/app\admin`, `/app/admin`}, {`/app/\/\/\admin`, `/app//////admin`},
			{`/%2Fapp%5cadmin%5Cabc`, `/%2Fapp%5cadmin%5Cabc`},
			{`/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc`, `/%5Capp%2f%5c%2F..%2fadmin%5c/abc`},
			{`/app//../admin`, `/app/admin`}, {`/app//../../admin`, `/admin`},
			// Not Istio's: an escaped slash next to a byte Go's URL type
			// escapes again ('|') reaches the app as sent, %2F kept.
			{"/admin%2Fsecret|x", "/admin%2Fsecret|x"},
		}},
		{meshconfig.MeshConfig_ProxyPathNormalization_MERGE_SLASHES, []expect{
			{"/", "/"}, {"/app/", "/app/"}, {"/app/../admin", "/admin"}, {"/app", "/app"}, {"/app//", "/app/"},
			{"/app/%2f", "/app/%2f"}, {"/app%2f/", "/app%2f/"}, {"/xyz%30..//abc", "/xyz0../abc"},
			{"/app/%2E./admin", "/admin"}, {`/app\admin`, `/app/admin`}, {`/app/\/\/\admin`, `/app/admin`},
			{`/%2Fapp%5cadmin%5Cabc`, `/%2Fapp%5cadmin%5Cabc`},
			{`/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc`, `/%5Capp%2f%5c%2F..%2fadmin%5c/abc`},
			{`/app//../admin`, `/app/admin`}, {`/app//../../admin`, `/admin`},
		}},
		{meshconfig.MeshConfig_ProxyPathNormalization_DECODE_AND_MERGE_SLASHES, common([]expect{
			{"/", "/"}, {"/app/", "/app/"}, {"/app/../admin", "/admin"}, {"/app", "/app"}, {"/app//", "/app/"},
			{"/app/%2f", "/app/"}, {"/app%2f/", "/app/"}, {"/xyz%30..//abc", "/xyz0../abc"},
			{"/app/%2E./admin", "/admin"}, {`/app\admin`, `/app/admin`}, {`/app/\/\/\admin`, `/app/admin`},
			{`/%2Fapp%5cadmin%5Cabc`, `/app/admin/abc`}, {`/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc`, `/app/admin/abc`},
			{`/app//../admin`, `/app/admin`}, {`/app//../../admin`, `/admin`},
			{`/%c0%2e%c0%2e/admin`, `/%c0.%c0./admin`}, {`/%c0%2fadmin`, `/%c0/admin`},
			{`/admin%00`, `400`},
			{"/admin%2Fsecret|x", "/admin/secret|x"},
		}, []expect{ // "NotNormalized": left as they are
			{`/0x2e0x2e/admin`, `/0x2e0x2e/admin`}, {`/0x2e0x2e0x2fadmin`, `/0x2e0x2e0x2fadmin`},
			{`/0x2e0x2e0x5cadmin`, `/0x2e0x2e0x5cadmin`}, {`/0x2f0x2fadmin`, `/0x2f0x2fadmin`},
			{`/0x5c0x5cadmin`, `/0x5c0x5cadmin`}, {`/%25c0%25ae%25c1%259cadmin`, `/%25c0%25ae%25c1%259cadmin`},
			{`/%25c0%25ae%25c0%25ae/admin`, `/%25c0%25ae%25c0%25ae/admin`}, {`/%25c0%25afadmin`, `/%25c0%25afadmin`},
			{`/%25c1%259cadmin`, `/%25c1%259cadmin`}, {`/%252e%252e/admin`, `/%252e%252e/admin`},
			{`/%252e%252e%252fadmin`, `/%252e%252e%252fadmin`}, {`/%c1%9cadmin`, `/%c1%9cadmin`},
			{`/%c0%ae%c0%ae/admin`, `/%c0%ae%c0%ae/admin`}, {`/%c0%afadmin`, `/%c0%afadmin`},
			{`/.../admin`, `/.../admin`}, {`/..../admin`, `/..../admin`}, {`/..;/admin`, `/..;/admin`},
			{`/;/admin`, `/;/admin`}, {`/admin;a=b`, `/admin;a=b`}, {`/admin;a=b/xyz`, `/admin;a=b/xyz`},
			{`/admin,a=b/xyz`, `/admin,a=b/xyz`}, {`/Admin`, `/Admin`}, {`/ADMIN`, `/ADMIN`},
		}, percentEncoded)},
	}
	for _, md := range modes {
		t.Run(md.mode.String(), func(t *testing.T) {
			mc := config.DefaultMeshConfig()
			mc.PathNormalization = &meshconfig.MeshConfig_ProxyPathNormalization{Normalization: md.mode}
			m := NewMesh(t, func(o *controlplane.Options) { o.MeshConfig = mc })
			m.ServiceOnPort("b", "HTTP", 80, "v1")
			a := m.Client("a")
			Eventually(t, 10*time.Second, "b reachable", func() error {
				_, err := rawGet(a.Outbound, "b", "/")
				return err
			})
			for _, c := range md.cases {
				got, err := rawGet(a.Outbound, "b", c.in)
				if err != nil {
					t.Errorf("%s: %v", c.in, err)
					continue
				}
				if got != c.out {
					t.Errorf("%s: the app got %s, want %s", c.in, got, c.out)
				}
			}
		})
	}
}

// rawGet writes "GET target" for host on a new connection to addr, as
// written, and returns the request target the echo app received, or the
// status code when it is not 200.
func rawGet(addr, host, target string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target, host); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprint(resp.StatusCode), nil
	}
	var r echo.Reply
	if err := json.Unmarshal(body, &r); err != nil {
		return "", fmt.Errorf("decoding %q: %w", body, err)
	}
	return r.URI, nil
}
