// Package grpccall makes the unary gRPC calls of the proxy's filters —
// the rate limit service's ShouldRateLimit, external authorization's
// Check — as Envoy's envoy_grpc async client does: through the proxy's
// own cluster of the service (filter.Upstream: its endpoints, balancer,
// breakers and mutual TLS), one length-prefixed uncompressed protobuf
// message over HTTP/2, the answer's grpc-status from its trailers (or its
// headers, for a trailers-only answer).
package grpccall

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	"weft.dev/weft/internal/proxy/filter"
	"weft.dev/weft/internal/proxy/xdswire"
)

// maxResponse bounds the answer read.
const maxResponse = 1 << 20

// ErrService is a call that reached the service and failed: a non-200
// HTTP status, a grpc-status other than 0, or an answer that is not one
// message of the expected type.
var ErrService = errors.New("gRPC service")

// Call sends in to method (e.g. "/envoy.service.auth.v3.Authorization/Check")
// of the service behind cluster, with :authority authority, and decodes
// the answer into out. A positive timeout bounds the call (and is sent as
// grpc-timeout); ctx bounds it too.
func Call(ctx context.Context, up filter.Upstream, cluster, authority, method string, timeout time.Duration, in, out proto.Message) error {
	if up == nil {
		return fmt.Errorf("no upstream to call cluster %q", cluster)
	}
	msg, err := proto.Marshal(in)
	if err != nil {
		return err
	}
	body := make([]byte, 5+len(msg))
	binary.BigEndian.PutUint32(body[1:5], uint32(len(msg)))
	copy(body[5:], msg)
	hdr := http.Header{"Content-Type": {"application/grpc"}, "Te": {"trailers"}}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
		hdr["Grpc-Timeout"] = []string{strconv.FormatInt(max(timeout.Milliseconds(), 1), 10) + "m"}
	}
	req := (&http.Request{
		Method: http.MethodPost, URL: &url.URL{Scheme: "http", Path: method}, Host: authority,
		Proto: "HTTP/2.0", ProtoMajor: 2, Header: hdr,
		Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
	}).WithContext(ctx)
	resp, err := up.RoundTrip(ctx, cluster, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: HTTP status %d", ErrService, resp.StatusCode)
	}
	code := cmp.Or(resp.Trailer.Get("Grpc-Status"), resp.Header.Get("Grpc-Status"))
	if code != "0" {
		return fmt.Errorf("%w: grpc-status %q: %s", ErrService, code, cmp.Or(resp.Trailer.Get("Grpc-Message"), resp.Header.Get("Grpc-Message")))
	}
	if len(data) < 5 || data[0] != 0 || int(binary.BigEndian.Uint32(data[1:5])) != len(data)-5 {
		return fmt.Errorf("%w: not one uncompressed gRPC message (%d bytes)", ErrService, len(data))
	}
	if err := xdswire.Unmarshal(data[5:], out); err != nil {
		return fmt.Errorf("%w: %v", ErrService, err)
	}
	return nil
}
