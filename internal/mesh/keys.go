package mesh

import (
	security "istio.io/api/security/v1beta1"

	"weft.dev/weft/internal/jwks"
)

// KeyIndex gives each JWT rule the key set its tokens are verified with.
// The keys of a jwksUri (or of OpenID discovery) are fetched by the
// control plane (internal/jwks) and handed to Build; the generators never
// fetch anything. It is immutable after construction.
type KeyIndex struct {
	fetched map[jwks.Source]string
}

// Keys returns the JWKS to inline for rule: its own jwks, else the keys
// fetched for its source; fetched is false when they were never fetched,
// and the keys are then jwks.FailClosed, which rejects every token, as
// Istio does.
func (i *KeyIndex) Keys(rule *security.JWTRule) (keys string, fetched bool) {
	if k := rule.GetJwks(); k != "" {
		return k, true
	}
	if i != nil {
		if k, ok := i.fetched[jwks.SourceOf(rule.GetIssuer(), rule.GetJwksUri())]; ok && k != "" {
			return k, true
		}
	}
	return jwks.FailClosed, false
}
