package ca

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"weft.dev/weft/internal/spiffe"
)

// Bootstrap token lifetimes.
const (
	DefaultTokenTTL = time.Hour
	MaxTokenTTL     = 24 * time.Hour
	// FileRedeemed, in the CA directory, lists redeemed tokens until they
	// expire, so a restart does not make a used token usable again.
	FileRedeemed = "redeemed-tokens"
)

// Errors of Tokens.Verify and Redeem, wrapped with the details.
var (
	ErrTokenInvalid = errors.New("bootstrap token is not valid")
	ErrTokenExpired = errors.New("bootstrap token has expired")
	ErrTokenUsed    = errors.New("bootstrap token was already used")
)

// Token is what a bootstrap token says.
type Token struct {
	// ID is unique per token (the JWT's jti).
	ID                string
	Identity          spiffe.ID
	IssuedAt, Expires time.Time
}

// Tokens issues bootstrap tokens and redeems each once. A token is a
// compact JWT (HS256) whose claims name one identity; the HMAC key is
// derived from the CA's key with HKDF, so tokens stay valid across
// restarts exactly when the CA does. Safe for concurrent use.
type Tokens struct {
	key  []byte
	td   string
	log  *slog.Logger
	file string // "" keeps redeemed tokens in memory only

	mu       sync.Mutex
	redeemed map[string]time.Time // token ID -> its expiry
}

func newTokens(caKey crypto.Signer, td, dir string, log *slog.Logger) (*Tokens, error) {
	der, err := x509.MarshalPKCS8PrivateKey(caKey)
	if err != nil {
		return nil, fmt.Errorf("ca: token key: %w", err)
	}
	key, err := hkdf.Key(sha256.New, der, nil, "weft bootstrap token HMAC-SHA256 v1", 32)
	if err != nil {
		return nil, fmt.Errorf("ca: token key: %w", err)
	}
	t := &Tokens{key: key, td: td, log: log, redeemed: map[string]time.Time{}}
	if dir != "" {
		t.file = filepath.Join(dir, FileRedeemed)
		t.load()
	}
	return t, nil
}

type jwtHeader struct {
	Alg string `json:"alg"`
	Typ string `json:"typ"`
}

type jwtClaims struct {
	Iss string `json:"iss"`
	Aud string `json:"aud"`
	Sub string `json:"sub"`
	Jti string `json:"jti"`
	Iat int64  `json:"iat"`
	Exp int64  `json:"exp"`
}

const (
	tokenIssuer   = "weft"
	tokenAudience = "weft-ca"
)

var b64 = base64.RawURLEncoding

// Issue makes a bootstrap token for id, valid for ttl (zero means
// DefaultTokenTTL; at most MaxTokenTTL). The control plane's own identity
// is refused.
func (t *Tokens) Issue(id spiffe.ID, ttl time.Duration) (string, Token, error) {
	return t.issueAt(id, time.Now(), ttl)
}

func (t *Tokens) issueAt(id spiffe.ID, now time.Time, ttl time.Duration) (string, Token, error) {
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	if ttl < time.Second || ttl > MaxTokenTTL {
		return "", Token{}, fmt.Errorf("token lifetime %v: want between 1s and %v", ttl, MaxTokenTTL)
	}
	if err := t.issuable(id); err != nil {
		return "", Token{}, err
	}
	var raw [16]byte
	_, _ = rand.Read(raw[:]) // never fails (crypto/rand)
	tok := Token{ID: hex.EncodeToString(raw[:]), Identity: id, IssuedAt: now.Truncate(time.Second),
		Expires: now.Add(ttl).Truncate(time.Second)}
	h, _ := json.Marshal(jwtHeader{Alg: "HS256", Typ: "JWT"})
	c, _ := json.Marshal(jwtClaims{Iss: tokenIssuer, Aud: tokenAudience, Sub: id.String(), Jti: tok.ID,
		Iat: tok.IssuedAt.Unix(), Exp: tok.Expires.Unix()})
	signed := b64.EncodeToString(h) + "." + b64.EncodeToString(c)
	return signed + "." + b64.EncodeToString(t.mac(signed)), tok, nil
}

// issuable refuses identities no token may be issued for.
func (t *Tokens) issuable(id spiffe.ID) error {
	if err := id.Validate(); err != nil {
		return err
	}
	if id.TrustDomain != t.td {
		return fmt.Errorf("identity %s is not in the CA's trust domain %q", id, t.td)
	}
	if id == spiffe.ControlPlane(t.td) {
		return fmt.Errorf("identity %s is the control plane's own; no workload may have it", id)
	}
	return nil
}

func (t *Tokens) mac(s string) []byte {
	m := hmac.New(sha256.New, t.key)
	m.Write([]byte(s))
	return m.Sum(nil)
}

// Verify checks a token's signature, claims and expiry at now and that it
// has not been redeemed. It does not redeem it.
func (t *Tokens) Verify(s string, now time.Time) (Token, error) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return Token{}, fmt.Errorf("%w: not a JWT (want three dot-separated parts)", ErrTokenInvalid)
	}
	hb, err1 := b64.DecodeString(parts[0])
	cb, err2 := b64.DecodeString(parts[1])
	sig, err3 := b64.DecodeString(parts[2])
	if err := errors.Join(err1, err2, err3); err != nil {
		return Token{}, fmt.Errorf("%w: %w", ErrTokenInvalid, err)
	}
	var h jwtHeader
	if err := json.Unmarshal(hb, &h); err != nil || h.Alg != "HS256" {
		return Token{}, fmt.Errorf("%w: header %s: want a weft bootstrap token (alg HS256)", ErrTokenInvalid, hb)
	}
	if !hmac.Equal(sig, t.mac(parts[0]+"."+parts[1])) {
		return Token{}, fmt.Errorf("%w: bad signature (not issued by this CA, or altered)", ErrTokenInvalid)
	}
	var c jwtClaims
	if err := json.Unmarshal(cb, &c); err != nil {
		return Token{}, fmt.Errorf("%w: claims: %w", ErrTokenInvalid, err)
	}
	if c.Iss != tokenIssuer || c.Aud != tokenAudience || c.Jti == "" {
		return Token{}, fmt.Errorf("%w: issuer %q, audience %q: not a weft bootstrap token", ErrTokenInvalid, c.Iss, c.Aud)
	}
	id, err := spiffe.Parse(c.Sub)
	if err != nil {
		return Token{}, fmt.Errorf("%w: %w", ErrTokenInvalid, err)
	}
	tok := Token{ID: c.Jti, Identity: id, IssuedAt: time.Unix(c.Iat, 0), Expires: time.Unix(c.Exp, 0)}
	if err := t.issuable(id); err != nil {
		return Token{}, fmt.Errorf("%w: %w", ErrTokenInvalid, err)
	}
	if !now.Before(tok.Expires) {
		return Token{}, fmt.Errorf("%w: the token for %s expired at %s", ErrTokenExpired, id, tok.Expires.UTC().Format(time.RFC3339))
	}
	t.mu.Lock()
	_, used := t.redeemed[tok.ID]
	t.mu.Unlock()
	if used {
		return Token{}, fmt.Errorf("%w: the token for %s (id %s) is single-use; issue a new one with weft token", ErrTokenUsed, id, tok.ID)
	}
	return tok, nil
}

// Redeem marks a verified token used. It fails if the token was redeemed
// meanwhile (two requests racing with one token: one wins).
func (t *Tokens) Redeem(tok Token) error {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, used := t.redeemed[tok.ID]; used {
		return fmt.Errorf("%w: the token for %s (id %s) is single-use", ErrTokenUsed, tok.Identity, tok.ID)
	}
	for id, exp := range t.redeemed {
		if now.After(exp) {
			delete(t.redeemed, id)
		}
	}
	t.redeemed[tok.ID] = tok.Expires
	if t.file != "" {
		if err := appendLine(t.file, tok.ID+" "+strconv.FormatInt(tok.Expires.Unix(), 10)+"\n"); err != nil {
			// Still redeemed in memory; only a restart before the token
			// expires could make it usable again.
			t.log.Warn("could not record a redeemed bootstrap token on disk", "error", err)
		}
	}
	return nil
}

// load reads the redeemed tokens that have not expired and rewrites the
// file without the others.
func (t *Tokens) load() {
	data, err := os.ReadFile(t.file)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		t.log.Warn("could not read the redeemed bootstrap tokens; tokens used before this start could be used again until they expire", "file", t.file, "error", err)
		return
	}
	now := time.Now()
	var keep bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		id, exp, ok := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		sec, err := strconv.ParseInt(exp, 10, 64)
		if !ok || err != nil || id == "" {
			t.log.Warn("ignoring a malformed line", "file", t.file, "line", n)
			continue
		}
		if e := time.Unix(sec, 0); now.Before(e) {
			t.redeemed[id] = e
			fmt.Fprintf(&keep, "%s %d\n", id, sec)
		}
	}
	if keep.Len() != len(data) {
		if err := writeFile(t.file, keep.Bytes()); err != nil {
			t.log.Warn("could not compact the redeemed bootstrap tokens", "error", err)
		}
	}
}

func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(line); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
