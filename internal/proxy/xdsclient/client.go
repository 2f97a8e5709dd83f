package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
	"weft.dev/weft/internal/proxy/xdswire"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"weft.dev/weft/internal/proxy/cpdial"
)

// Defaults for zero Options fields.
const (
	DefaultBackoffBase = 100 * time.Millisecond
	DefaultBackoffMax  = 5 * time.Second
	// DefaultKeepaliveTime is grpc-go's minimum HTTP/2 ping interval. The
	// faster check of a dead connection is the TCP one in cpdial.
	DefaultKeepaliveTime = 10 * time.Second
	// DefaultKeepaliveTimeout equals cpdial.UserTimeout: grpc-go also sets
	// TCP_USER_TIMEOUT to it on the connection.
	DefaultKeepaliveTimeout  = cpdial.UserTimeout
	DefaultIncompleteTimeout = 2 * time.Second
	// connectTimeout bounds connecting to one replica, TLS included.
	connectTimeout = 10 * time.Second
	// maxRecvMsgSize bounds one xDS response; large meshes exceed gRPC's
	// 4 MiB default.
	maxRecvMsgSize = 64 << 20
	// WriteBufferSize is the gRPC write buffer of the connection to the
	// control plane, so the most it writes at once: over TLS each write
	// is a record, and the control plane's TLS reader keeps, for the
	// connection's life, a buffer as large as the largest record it read
	// (internal/xds/server, recordConn). A proxy sends requests and ACKs,
	// little and seldom; a subscription to thousands of names goes out in
	// 4 KiB records instead of 16 KiB ones.
	WriteBufferSize = 4 << 10
	// WindowSize is the HTTP/2 receive window of the connection to the
	// control plane and of its stream, fixed. gRPC-Go otherwise sizes the
	// window by bandwidth-delay estimation, which answers the first DATA
	// frame of every response with a PING: one more frame each way, and
	// a TLS record to seal and open on both sides, at every push to every
	// proxy. 4 MiB takes a large mesh's first configuration without
	// waiting for window updates (as far as the estimator would grow it);
	// a window is a credit, not a buffer.
	WindowSize = 4 << 20
)

// DialOptions are the gRPC dial options of a connection to the control
// plane that do not depend on the client's Options: what weft-proxy's
// connections are, for tools that play proxies (xdsload).
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithWriteBufferSize(WriteBufferSize),
		grpc.WithInitialWindowSize(WindowSize),
		grpc.WithInitialConnWindowSize(WindowSize),
	}
}

// Options configure a Client. Address, Node and Applier are required.
type Options struct {
	// Address is the control plane's host:port, or several replicas'
	// separated by commas. A host name stands for every A and AAAA record
	// it resolves to (looked up again each time all were tried). The
	// client starts at a random one and, when a stream ends, goes on to
	// the next at once; it backs off only after every address failed.
	Address string
	// Credentials secure the connection (TLS to the control plane's
	// secure port); nil dials plaintext.
	Credentials credentials.TransportCredentials
	// Node identifies the proxy; see contract.Identity.Node.
	Node *core.Node
	// Applier receives complete resource sets, from one goroutine.
	Applier Applier
	// Secrets, when set, receives the SDS secrets over ADS the listeners
	// name (a gateway's credentials; secrets.go); nil subscribes to none.
	Secrets SecretSink
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// BackoffBase and BackoffMax bound the jittered exponential delay
	// between rounds of stream attempts once every replica failed
	// (defaults 100ms and 5s). Within a round, the next replica is tried
	// after at most BackoffBase (random, so a fleet does not move in
	// lockstep).
	BackoffBase, BackoffMax time.Duration
	// KeepaliveTime and KeepaliveTimeout are the HTTP/2 ping interval and
	// how long to wait for its ack before the connection is declared dead
	// (defaults 10s and 4s): they catch a control plane that is hung while
	// its host still answers TCP. A vanished host is noticed sooner, by
	// the TCP keepalive and TCP_USER_TIMEOUT of cpdial (about 4s); grpc-go
	// also sets TCP_USER_TIMEOUT to KeepaliveTimeout. The server must
	// permit pings this often (keepalive.EnforcementPolicy MinTime <=
	// KeepaliveTime, PermitWithoutStream), or it closes the connection
	// with "too_many_pings". grpc-go raises a Time below 10s to 10s.
	KeepaliveTime, KeepaliveTimeout time.Duration
	// IncompleteTimeout is how long, after the first config was applied,
	// the client waits for routes or assignments that new listeners or
	// clusters reference before applying without them (missing
	// assignments empty, missing route configurations empty). Default 2s.
	// The first config is only ever applied complete.
	IncompleteTimeout time.Duration
	// Protocol is the ADS variant: ProtocolDelta (the default) or
	// ProtocolSotW; see protocol.go.
	Protocol Protocol
	// HeavyWork, if set, is called before a response of at least
	// LargeResponse bytes is taken in, and the function it returns once
	// that response, and the set it may complete, were applied. The proxy
	// collects garbage on a small headroom meanwhile (gctune.Tight), so
	// that the state built from a large configuration is packed into the
	// space its temporaries leave.
	HeavyWork func() (done func())
}

// Stats are counters for the admin endpoint, metrics and tests.
type Stats struct {
	ACKs       uint64 // ACK requests sent, one per type per applied batch
	NACKs      uint64 // NACK requests sent
	Applies    uint64 // successful Applier.Apply calls
	Reconnects uint64 // streams established after the first one
	// Address is the control plane replica of the open stream, or "".
	Address string
	// LastNACKError is the error_detail message of the last NACK, or "".
	LastNACKError string
}

// Client is an ADS (state of the world) client. Create it with New and
// drive it with Run; Connected and Stats may be called from any goroutine.
type Client struct {
	opts Options
	log  *slog.Logger

	running   atomic.Bool
	connected atomic.Bool
	acks      atomic.Uint64
	nacks     atomic.Uint64
	applies   atomic.Uint64
	reconns   atomic.Uint64
	recv      receiveCounters               // protocol.go
	types     [len(deltaOrder)]typeCounters // by index in deltaOrder

	mu      sync.Mutex
	lastErr string
	addr    string // replica of the open stream
}

// New checks the options and fills in defaults. It does not connect.
func New(opts Options) (*Client, error) {
	if opts.Address == "" {
		return nil, errors.New("xdsclient: Address is required")
	}
	if _, err := cpdial.Split(opts.Address); err != nil {
		return nil, fmt.Errorf("xdsclient: %w", err)
	}
	if opts.Node == nil || opts.Node.GetId() == "" {
		return nil, errors.New("xdsclient: Node with an id is required")
	}
	if opts.Applier == nil {
		return nil, errors.New("xdsclient: Applier is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.BackoffBase, DefaultBackoffBase)
	def(&opts.BackoffMax, DefaultBackoffMax)
	def(&opts.KeepaliveTime, DefaultKeepaliveTime)
	def(&opts.KeepaliveTimeout, DefaultKeepaliveTimeout)
	def(&opts.IncompleteTimeout, DefaultIncompleteTimeout)
	var err error
	if opts.Protocol, err = opts.Protocol.withDefault(); err != nil {
		return nil, err
	}
	if opts.BackoffMax < opts.BackoffBase {
		return nil, fmt.Errorf("xdsclient: BackoffMax %v is less than BackoffBase %v", opts.BackoffMax, opts.BackoffBase)
	}
	return &Client{
		opts: opts,
		log:  opts.Logger.With("component", "xdsclient", "xds_address", opts.Address, "node", opts.Node.GetId()),
	}, nil
}

// Connected reports whether an ADS stream is currently open. Safe for
// concurrent use; never blocks.
func (c *Client) Connected() bool { return c.connected.Load() }

// Stats returns a snapshot of the counters. Safe for concurrent use.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	last, addr := c.lastErr, c.addr
	c.mu.Unlock()
	return Stats{
		Address:       addr,
		ACKs:          c.acks.Load(),
		NACKs:         c.nacks.Load(),
		Applies:       c.applies.Load(),
		Reconnects:    c.reconns.Load(),
		LastNACKError: last,
	}
}

// Run connects to the control plane and keeps an ADS stream open until
// ctx is done, going from replica to replica (see Options.Address). It
// then returns nil once every goroutine it started has ended. It returns
// an error only when it cannot start at all. Run may be called once.
//
// While disconnected the Applier is not called: the data plane keeps
// serving its last applied config.
func (c *Client) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("xdsclient: Run called more than once")
	}
	addrs, err := cpdial.Split(c.opts.Address)
	if err != nil {
		return fmt.Errorf("xdsclient: %w", err)
	}
	replicas, err := cpdial.NewReplicas(addrs, c.log)
	if err != nil {
		return fmt.Errorf("xdsclient: %w", err)
	}

	st := c.newSession() // protocol.go: delta or state of the world
	fails := 0           // attempts in a row that got no response
	established := false
	for {
		addr := replicas.Next(ctx)
		healthy, err := c.runOnce(ctx, st, addr, func() {
			if established {
				c.reconns.Add(1)
			}
			established = true
			c.mu.Lock()
			c.addr = addr
			c.mu.Unlock()
			c.connected.Store(true)
		})
		c.connected.Store(false)
		c.mu.Lock()
		c.addr = ""
		c.mu.Unlock()
		if ctx.Err() != nil {
			return nil
		}
		if healthy {
			fails = 0
		}
		fails++
		delay := c.retryDelay(fails, replicas.Len())
		c.log.Warn("ADS stream ended; trying the next control plane replica", "replica", addr, "error", err, "delay", delay, "failed_attempts", fails)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// runOnce dials one replica and serves one ADS stream on it; see
// state.runStream. The connection is closed when it returns: the next
// attempt, maybe to another replica, starts from a fresh one.
func (c *Client) runOnce(ctx context.Context, st session, addr string, onOpen func()) (healthy bool, err error) {
	creds := c.opts.Credentials
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient("passthrough:///"+addr, append(DialOptions(),
		grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(cpdial.Dial),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                c.opts.KeepaliveTime,
			Timeout:             c.opts.KeepaliveTimeout,
			PermitWithoutStream: true,
		}),
		grpc.WithConnectParams(grpc.ConnectParams{
			// One connection per attempt: gRPC's own reconnect loop
			// never runs; Run decides where to go next.
			Backoff:           backoff.Config{BaseDelay: c.opts.BackoffBase, Multiplier: 1.6, Jitter: 0.2, MaxDelay: c.opts.BackoffMax},
			MinConnectTimeout: connectTimeout,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgSize), grpc.ForceCodecV2(xdswire.Codec{})),
	)...)
	if err != nil {
		return false, fmt.Errorf("dialing control plane %s: %w", addr, err)
	}
	defer conn.Close()
	return st.runStream(ctx, discovery.NewAggregatedDiscoveryServiceClient(conn), func() {
		c.log.Info("connected to control plane replica", "replica", addr)
		onOpen()
	})
}

// retryDelay is the wait before the next attempt after fails attempts in
// a row without a response, with n replicas: at most BackoffBase (random)
// while some replica of this round is still untried, then growing
// exponentially with every further round.
func (c *Client) retryDelay(fails, n int) time.Duration {
	if fails <= n {
		return rand.N(c.opts.BackoffBase)
	}
	return c.backoff((fails-1)/n - 1)
}

// backoff returns the delay before attempt n (0-based): exponential from
// BackoffBase, capped at BackoffMax, with "equal jitter" (between half and
// all of it) so a fleet of proxies does not reconnect in lockstep.
func (c *Client) backoff(n int) time.Duration {
	d := c.opts.BackoffBase
	for i := 0; i < n && d < c.opts.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, c.opts.BackoffMax)
	half := d / 2
	return half + rand.N(half+1)
}

// typeCounters are the ACK/NACK state of one resource type.
type typeCounters struct {
	lastACK  atomic.Int64 // unix nanoseconds; 0: never
	rejected atomic.Bool  // the last response of the type was NACKed
	acks     atomic.Uint64
	nacks    atomic.Uint64
}

// TypeStatus is what the client did with the responses of one resource
// type (TypeStats).
type TypeStatus struct {
	// LastACK is when a response of the type was last accepted (zero:
	// never).
	LastACK time.Time
	// Rejected is set while the last response of the type was refused
	// (NACKed): the proxy serves an older configuration than the
	// control plane sent.
	Rejected    bool
	ACKs, NACKs uint64
}

// TypeStats returns the status of each resource type, by type URL. Safe
// for concurrent use.
func (c *Client) TypeStats() map[string]TypeStatus {
	out := make(map[string]TypeStatus, len(deltaOrder))
	for i, t := range deltaOrder {
		tc := &c.types[i]
		s := TypeStatus{Rejected: tc.rejected.Load(), ACKs: tc.acks.Load(), NACKs: tc.nacks.Load()}
		if ns := tc.lastACK.Load(); ns != 0 {
			s.LastACK = time.Unix(0, ns)
		}
		out[t] = s
	}
	return out
}

func (c *Client) typeCounters(t string) *typeCounters {
	for i, u := range deltaOrder {
		if u == t {
			return &c.types[i]
		}
	}
	return nil
}

// recordACK counts an accepted response of type t.
func (c *Client) recordACK(t string) {
	c.acks.Add(1)
	if tc := c.typeCounters(t); tc != nil {
		tc.acks.Add(1)
		tc.rejected.Store(false)
		tc.lastACK.Store(time.Now().UnixNano())
	}
}

// recordNACK counts a refused response of type t.
func (c *Client) recordNACK(t, msg string) {
	if tc := c.typeCounters(t); tc != nil {
		tc.nacks.Add(1)
		tc.rejected.Store(true)
	}
	c.nacks.Add(1)
	c.mu.Lock()
	c.lastErr = msg
	c.mu.Unlock()
}
