package kubesource

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"weft.dev/weft/internal/config"
)

// ReportingController names Weft in the events it writes.
const ReportingController = "weft.dev/config"

// fieldManager owns the status fields Weft writes (server-side field
// ownership, shown in managedFields).
const fieldManager = "weft"

// report is what the writer needs of one load.
type report struct {
	diags       map[string][]config.Diagnostic // by virtual file
	inForce     map[string]bool                // resource keys in force
	generations map[string]int64               // virtual file -> generation judged
	gatewayAPI  *config.GatewayAPIStatus       // the Gateway API translation's outcome
}

// writer writes each object's status and the events of its rejections,
// while this replica leads. One goroutine (run) does all writes, so the
// API server sees at most one request of ours at a time; Report only
// hands it the latest report.
type writer struct {
	s      *Source
	leader atomic.Bool
	pokeCh chan struct{}

	mu     sync.Mutex
	latest *report
	// announced holds, per virtual file, the rejections an event was
	// written for, so each is announced once.
	announced map[string]map[string]bool
}

func newWriter(s *Source) *writer {
	return &writer{s: s, pokeCh: make(chan struct{}, 1), announced: map[string]map[string]bool{}}
}

func (w *writer) poke() {
	select {
	case w.pokeCh <- struct{}{}:
	default:
	}
}

// forget drops what the writer remembers of a deleted object.
func (w *writer) forget(path string) {
	w.mu.Lock()
	delete(w.announced, path)
	w.mu.Unlock()
}

// Report implements config.Reporter: it hands the snapshot's outcome for
// this source's objects to the status writer and returns at once. Only
// the latest report is written; one superseded before the writer got to
// it is skipped.
func (s *Source) Report(snap *config.Snapshot) {
	if s.opts.ReadOnly || snap == nil {
		return
	}
	r := &report{diags: diagnosticsByFile(snap), inForce: inForce(snap), generations: s.servedGenerations(), gatewayAPI: snap.GatewayAPI}
	s.w.mu.Lock()
	s.w.latest = r
	s.w.mu.Unlock()
	s.w.poke()
}

// CertificatesChanged tells the status writer that what
// Options.Certificates answers may have changed (a Secret came, went or
// changed): the Gateways' listener status is written again from the
// latest load.
func (s *Source) CertificatesChanged() { s.w.poke() }

// Leader reports whether this replica holds the Lease and writes status.
func (s *Source) Leader() bool { return s.w.leader.Load() }

// Identity is this replica's name in the Lease and in its events.
func (s *Source) Identity() string { return s.opts.Identity }

// elect runs leader election until ctx is done: while this replica holds
// the Lease, the writer writes. Losing the Lease (the API server was
// unreachable past the renew deadline) stops the writes; the replica then
// tries to acquire it again.
func (w *writer) elect(ctx context.Context) {
	s := w.s
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: s.opts.LeaseNamespace, Name: LeaseName},
		Client:     s.kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: s.opts.Identity},
	}
	log := s.log.With("lease", s.opts.LeaseNamespace+"/"+LeaseName, "identity", s.opts.Identity)
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:          lock,
			LeaseDuration: s.opts.LeaseDuration, RenewDeadline: s.opts.RenewDeadline, RetryPeriod: s.opts.RetryPeriod,
			ReleaseOnCancel: true,
			Name:            LeaseName,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(context.Context) {
					log.Info("leading: this replica writes status")
					w.leader.Store(true)
					w.poke()
				},
				OnStoppedLeading: func() {
					if w.leader.Swap(false) {
						log.Info("no longer leading: status writes stop")
					}
				},
			},
		})
		if err != nil {
			log.Error("leader election misconfigured; status is not written", "error", err)
			return
		}
		le.Run(ctx)
	}
}

// run writes status until ctx is done, after each report and when this
// replica becomes leader; a failed write is retried with backoff.
func (w *writer) run(ctx context.Context) {
	const maxBackoff = 30 * time.Second
	backoff := time.Second
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.pokeCh:
		case <-retry.C:
		}
		if !w.leader.Load() {
			continue
		}
		w.mu.Lock()
		r := w.latest
		w.mu.Unlock()
		if r == nil {
			continue
		}
		if w.write(ctx, r) {
			backoff = time.Second
			continue
		}
		retry.Reset(backoff)
		backoff = min(2*backoff, maxBackoff)
	}
}

// write brings every object of the report up to date; it returns false
// when some write failed and should be retried.
func (w *writer) write(ctx context.Context, r *report) bool {
	s := w.s
	ok := true
	now := time.Now()
	gatewayAPI := r.gatewayAPI.WithCertificates(s.opts.Certificates)
	for _, path := range sortedKeys(r.generations) {
		if ctx.Err() != nil || !w.leader.Load() {
			return true // not ours to finish; the next leader does it
		}
		u, o := s.cached(path)
		if u == nil {
			continue // deleted since
		}
		gen := r.generations[path]
		k, ns, name, _ := ParseFilePath(path)
		if k == config.KindNamespace {
			continue // read for its labels; not Weft's to report on
		}
		v := judge(r.diags[path], r.inForce[string(k)+"/"+decodedNamespace(ns)+"/"+name])

		existing, _ := u.Object["status"].(map[string]any)
		desired, writeStatus := map[string]any(nil), true
		if isGatewayAPIKind(k) {
			// The translation's findings are about a version in force:
			// the Gateway API says them per listener and parent, not by
			// refusing the whole object.
			gv := judge(r.gatewayAPIDiags(path), r.inForce[string(k)+"/"+decodedNamespace(ns)+"/"+name])
			desired, writeStatus = desiredGatewayAPIStatus(u, k, gv, gen, now, gatewayAPI)
		} else {
			desired = desiredStatus(existing, v, gen, now, s.opts.DocsURL)
		}
		if writeStatus && !sameStatus(existing, desired) {
			obj := u.DeepCopy()
			obj.Object["status"] = desired
			_, err := s.dyn.Resource(o.gvr).Namespace(ns).UpdateStatus(ctx, obj, metav1.UpdateOptions{FieldManager: fieldManager})
			switch {
			case err == nil:
				s.log.Debug("status written", "object", path, "reason", v.reason, "generation", gen)
			case apierrors.IsNotFound(err):
			case apierrors.IsConflict(err):
				ok = false // the informer brings the newer version; retried then
			default:
				ok = false
				s.log.Warn("status write failed", "object", path, "error", err)
			}
		}
		if !w.announce(ctx, path, u, gen, v) {
			ok = false
		}
	}
	return ok
}

// gatewayAPIDiags are the diagnostics of a Gateway API object's virtual
// file, the translation's findings made warnings.
func (r *report) gatewayAPIDiags(path string) []config.Diagnostic {
	var out []config.Diagnostic
	for _, d := range r.diags[path] {
		if d.Severity == config.SeverityError && r.gatewayAPI.Found(d) {
			d.Severity = config.SeverityWarning
		}
		out = append(out, d)
	}
	return out
}

// announce writes one Warning event per rejection of the object not
// announced before; it returns false if an event could not be written.
func (w *writer) announce(ctx context.Context, path string, u *unstructured.Unstructured, gen int64, v verdict) bool {
	s := w.s
	rej := rejections(path, gen, v)
	w.mu.Lock()
	before := w.announced[path]
	w.mu.Unlock()
	done := map[string]bool{}
	ok := true
	for _, key := range sortedKeys(rej) {
		if before[key] {
			done[key] = true
			continue
		}
		d := rej[key]
		// A cluster-scoped object's events live in "default", as
		// client-go's recorders put them.
		evNS := cmp.Or(u.GetNamespace(), metav1.NamespaceDefault)
		ev := &eventsv1.Event{
			ObjectMeta:          metav1.ObjectMeta{Name: eventName(u.GetName()), Namespace: evNS},
			EventTime:           metav1.NewMicroTime(time.Now()),
			ReportingController: ReportingController,
			ReportingInstance:   truncate(s.opts.Identity, 128),
			Action:              "Load",
			Reason:              reasonOf(d),
			Type:                corev1.EventTypeWarning,
			Regarding: corev1.ObjectReference{
				APIVersion: u.GetAPIVersion(), Kind: u.GetKind(),
				Namespace: u.GetNamespace(), Name: u.GetName(), UID: u.GetUID(),
			},
			Note: truncate(fmt.Sprintf("generation %d: %s", gen, describe(d)), maxEventNote),
		}
		if _, err := s.kube.EventsV1().Events(evNS).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
			if ctx.Err() == nil {
				s.log.Warn("event write failed", "object", path, "error", err)
			}
			ok = false
			continue
		}
		done[key] = true
	}
	w.mu.Lock()
	if len(done) == 0 {
		delete(w.announced, path)
	} else {
		w.announced[path] = done
	}
	w.mu.Unlock()
	return ok
}

// eventName names an event "<object>.<hex nanoseconds>" as client-go's
// recorders do (generateName would need a name ending in a letter or
// digit); the object's part is cut so the whole stays under 253 bytes.
func eventName(object string) string {
	if len(object) > 230 {
		object = strings.TrimRight(object[:230], ".-")
	}
	return fmt.Sprintf("%s.%x", object, time.Now().UnixNano())
}
