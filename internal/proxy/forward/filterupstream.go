package forward

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"

	"weft.dev/weft/internal/proxy/cluster"
	"weft.dev/weft/internal/proxy/filter"
)

// filterUpstream is the clusters of the configuration a request is
// served by, as its filters call them (filter.Upstream).
type filterUpstream map[string]*cluster.Cluster

var _ filter.Upstream = filterUpstream(nil)

// FilterUpstream is how network filters (a TCP chain's, before its
// tcp_proxy) call services through clusters, as the HTTP filters do.
func FilterUpstream(clusters map[string]*cluster.Cluster) filter.Upstream {
	return filterUpstream(clusters)
}

// RoundTrip implements filter.Upstream: one attempt, no retries, through
// the cluster's balancer, breakers, pool and TLS, counted in its stats
// as the router counts requests it sends.
func (u filterUpstream) RoundTrip(ctx context.Context, name string, req *http.Request) (*http.Response, error) {
	c := u[name]
	if c == nil {
		return nil, fmt.Errorf("cluster %q not found", name)
	}
	ep := c.Pick(cluster.HashKey{})
	if ep == nil {
		c.Stats().CxNoneHealthy.Inc()
		return nil, fmt.Errorf("cluster %q: no healthy upstream", name)
	}
	adm, err := c.Breaker().Admit(ctx)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: %w", name, err)
	}
	ep.BeginRequest()
	req.URL.Scheme, req.URL.Host = "http", ep.Addr()
	if req.Host == "" {
		req.Host = ep.Addr()
	}
	resp, err := c.Upstream().RoundTrip(ctx, ep.Conns(), req, req, nil)
	c.Stats().RqTotal.Inc()
	if err != nil {
		ep.EndRequest()
		adm.Release()
		return nil, fmt.Errorf("cluster %q: endpoint %s: %w", name, ep.Addr(), err)
	}
	resp.Body = &releaseBody{ReadCloser: resp.Body, release: func() { ep.EndRequest(); adm.Release() }}
	return resp, nil
}

// releaseBody ends an attempt's accounting when its body is closed.
type releaseBody struct {
	io.ReadCloser
	once    sync.Once
	release func()
}

func (b *releaseBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
}
