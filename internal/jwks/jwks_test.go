package jwks

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	rsaKey = `{"kty":"RSA","kid":"a","e":"AQAB","n":"xY0XIJWEYp4NI437_3O4YSF-FcaqbOH_LBcNAApuysK9d1CJfG"}`
	ecKey  = `{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}`
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in      string
		err     string
		private bool
	}{
		{in: `{"keys":[` + rsaKey + `,` + ecKey + `]}`},
		{in: FailClosed},
		{in: `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`},
		{in: `{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`, private: true},
		{in: `{"keys":[{"kty":"RSA","e":"AQAB","n":"xY0X","d":"c2VjcmV0"}]}`, private: true},
		{in: `{"keys":[]}`, err: "has no keys"},
		{in: `{"kty":"RSA","e":"AQAB","n":"xY0X"}`, err: `want an object with a "keys" list`},
		{in: `{"keys":[{"kty":"RSA","e":"AQAB"}]}`, err: `key 0: RSA key: "n" is required`},
		{in: `{"keys":[{"kty":"EC","crv":"P-192","x":"a","y":"b"}]}`, err: `unsupported curve "P-192"`},
		{in: `{"keys":[{"kty":"RSA","e":"AQAB","n":"not base64!"}]}`, err: `"n" is not base64url`},
		{in: `{"keys":[{"kty":"DSA"}]}`, err: `unsupported key type "DSA"`},
		{in: `<html>`, err: "not a JSON Web Key Set"},
		{in: `{"keys":[]} {}`, err: "data after"},
	} {
		keys, err := Parse([]byte(tc.in))
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("Parse(%s): %v", tc.in, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("Parse(%s) = %v, want an error with %q", tc.in, err, tc.err)
		case err == nil && keys[len(keys)-1].Private != tc.private:
			t.Errorf("Parse(%s): private %v, want %v", tc.in, keys[len(keys)-1].Private, tc.private)
		}
	}
}

func TestCheckURL(t *testing.T) {
	for in, ok := range map[string]bool{
		"https://auth.example.com/keys": true,
		"http://127.0.0.1:8080/keys":    true,
		"http://[::1]:8080/keys":        true,
		"http://localhost/keys":         true,
		"http://auth.example.com/keys":  false,
		"http://10.0.0.1/keys":          false,
		"ftp://auth.example.com/keys":   false,
		"https:///keys":                 false,
		"auth.example.com/keys":         false,
	} {
		if err := CheckURL(in); (err == nil) != ok {
			t.Errorf("CheckURL(%s) = %v, want ok %v", in, err, ok)
		}
	}
}

func TestRefuseLinkLocal(t *testing.T) {
	if err := refuseLinkLocal("tcp4", "169.254.169.254:80", nil); err == nil {
		t.Error("169.254.169.254 (cloud metadata) is not refused")
	}
	if err := refuseLinkLocal("tcp4", "127.0.0.1:80", nil); err != nil {
		t.Errorf("loopback refused: %v", err)
	}
}

// keyServer serves a JWKS whose content the test changes, and counts
// requests; fail makes it answer 500.
type keyServer struct {
	*httptest.Server
	mu       sync.Mutex
	body     string
	fail     bool
	requests atomic.Int32
}

func newKeyServer(t *testing.T, body string) *keyServer {
	ks := &keyServer{body: body}
	mux := http.NewServeMux()
	mux.HandleFunc("/keys", func(w http.ResponseWriter, _ *http.Request) {
		ks.requests.Add(1)
		ks.mu.Lock()
		defer ks.mu.Unlock()
		if ks.fail {
			http.Error(w, "down for maintenance", http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, ks.body)
	})
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, `{"issuer":%q,"jwks_uri":%q,"authorization_endpoint":%q,"token_endpoint":%q,"end_session_endpoint":"http://192.0.2.1/logout"}`,
			ks.URL, ks.URL+"/keys", ks.URL+"/authorize", ks.URL+"/token")
	})
	ks.Server = httptest.NewServer(mux)
	t.Cleanup(ks.Close)
	return ks
}

func (ks *keyServer) set(body string, fail bool) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.body, ks.fail = body, fail
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestSyncFetchesAndDiscovers(t *testing.T) {
	ks := newKeyServer(t, `{"keys":[`+rsaKey+`]}`)
	f := NewFetcher(Options{Logger: quiet()})
	byURI, byIssuer := SourceOf("", ks.URL+"/keys"), SourceOf(ks.URL, "")
	notKeys := SourceOf("", ks.URL+"/.well-known/openid-configuration")
	f.Sync(context.Background(), []Want{
		{Source: byURI, Users: []string{"RequestAuthentication a/b spec.jwtRules[0]"}},
		{Source: byIssuer},
		{Source: notKeys},
	})
	keys := f.Keys()
	if keys[byURI] != `{"keys":[`+rsaKey+`]}` || keys[byIssuer] != keys[byURI] {
		t.Errorf("keys: %v", keys)
	}
	if _, ok := keys[notKeys]; ok {
		t.Errorf("a document that is not a key set was accepted as keys")
	}
	st := f.Status()
	if len(st) != 3 {
		t.Fatalf("status: %+v", st)
	}
	for _, s := range st {
		switch s.Source {
		case notKeys:
			if s.Fetched || !strings.Contains(s.LastError, "not a JSON Web Key Set") {
				t.Errorf("status of a bad document: %+v", s)
			}
		default:
			if !s.Fetched || s.LastError != "" {
				t.Errorf("status: %+v", s)
			}
		}
	}
	// Discovery keeps the endpoints for a gateway login, but not one
	// that is plain http off loopback.
	want := Discovery{Issuer: ks.URL, AuthorizationEndpoint: ks.URL + "/authorize", TokenEndpoint: ks.URL + "/token"}
	if d := f.Discovered(); len(d) != 1 || d[ks.URL] != want {
		t.Errorf("Discovered() = %+v, want %s: %+v", d, ks.URL, want)
	}
	// A source no longer wanted is forgotten.
	f.Sync(context.Background(), []Want{{Source: byURI}})
	if len(f.Keys()) != 1 || len(f.Status()) != 1 {
		t.Errorf("after dropping sources: keys %v, status %v", f.Keys(), f.Status())
	}
}

// waitFor polls cond every 5ms for at most 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 2000 {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("gave up waiting for %s", what)
}

func TestRunRefreshesKeepsLastGoodAndRetries(t *testing.T) {
	ks := newKeyServer(t, `{"keys":[`+rsaKey+`]}`)
	changed := make(chan struct{}, 10)
	f := NewFetcher(Options{
		Logger: quiet(), Refresh: 20 * time.Millisecond, Retry: 20 * time.Millisecond, FirstRetry: 5 * time.Millisecond,
		OnChange: func() { changed <- struct{}{} },
	})
	src := SourceOf("", ks.URL+"/keys")
	f.Sync(context.Background(), []Want{{Source: src}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})

	// The server fails: the last good keys stay, the error shows.
	ks.set("", true)
	waitFor(t, "the failure in the status", func() bool { return f.Status()[0].LastError != "" })
	if got := f.Keys()[src]; got != `{"keys":[`+rsaKey+`]}` {
		t.Errorf("after a failed refresh the keys are %q", got)
	}
	if st := f.Status()[0]; !st.Fetched || !strings.Contains(st.LastError, "status 500") {
		t.Errorf("status: %+v", st)
	}

	// It comes back with a rotated key: OnChange, new keys, no error.
	ks.set(`{"keys":[`+ecKey+`]}`, false)
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("no OnChange after the keys rotated")
	}
	if got := f.Keys()[src]; got != `{"keys":[`+ecKey+`]}` {
		t.Errorf("rotated keys: %q", got)
	}
	waitFor(t, "the error to clear", func() bool { return f.Status()[0].LastError == "" })
}

func TestNeverFetchedIsRetriedAndReported(t *testing.T) {
	ks := newKeyServer(t, "")
	ks.set("", true)
	changed := make(chan struct{}, 10)
	f := NewFetcher(Options{Logger: quiet(), FirstRetry: 5 * time.Millisecond, Retry: 10 * time.Millisecond,
		OnChange: func() { changed <- struct{}{} }})
	src := SourceOf("https://issuer", ks.URL+"/keys")
	f.Sync(context.Background(), []Want{{Source: src, Users: []string{"RequestAuthentication ns/jwt spec.jwtRules[0]"}}})
	if st := f.Status()[0]; st.Fetched || st.LastError == "" || len(f.Keys()) != 0 {
		t.Fatalf("a failed first fetch: %+v, keys %v", st, f.Keys())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "retries", func() bool { return ks.requests.Load() >= 3 })
	ks.set(`{"keys":[`+rsaKey+`]}`, false)
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("no OnChange once the keys could be fetched")
	}
	if len(f.Keys()) != 1 || !f.Status()[0].Fetched {
		t.Errorf("keys %v status %+v", f.Keys(), f.Status())
	}
}

func TestPlainHTTPElsewhereIsNotFetched(t *testing.T) {
	f := NewFetcher(Options{Logger: quiet()})
	src := SourceOf("", "http://keys.example.com/jwks")
	f.Sync(context.Background(), []Want{{Source: src}})
	if st := f.Status()[0]; st.Fetched || !strings.Contains(st.LastError, "https only") {
		t.Errorf("status: %+v", st)
	}
}

// TestRunEndsWhenCancelledMidFetch: a fetch cut short by the end of Run's
// context must not leave Run spinning on the source it left due.
func TestRunEndsWhenCancelledMidFetch(t *testing.T) {
	started := make(chan struct{})
	var (
		once  sync.Once
		mu    sync.Mutex
		calls int
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 { // Sync's fetch succeeds; Run's refreshes hang
			fmt.Fprint(w, `{"keys":[{"kty":"EC","kid":"b","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}`)
			return
		}
		once.Do(func() { close(started) })
		<-r.Context().Done() // hang until the client gives up
	}))
	t.Cleanup(srv.Close)
	f := NewFetcher(Options{Client: srv.Client(), Refresh: time.Millisecond, Timeout: time.Minute, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	f.Sync(ctx, []Want{{Source: Source{URI: srv.URL + "/keys"}, Users: []string{"test"}}})
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the fetch never started")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not end after its context was cancelled")
	}
}
