package jwt

// Status is the outcome of verifying a request's tokens. Its values and
// messages are those of Envoy's JWT library (google/jwt_verify_lib,
// jwt_verify_lib/status.h): the message is the body of Envoy's 401/403
// reply and part of its response code details, and the number is the
// "code" Envoy writes for failed_status_in_metadata, so clients, logs and
// dashboards see what they would see with Envoy.
type Status uint8

// The statuses, numbered as jwt_verify_lib numbers them.
const (
	OK                                Status = 0
	JwtMissed                         Status = 1
	JwtNotYetValid                    Status = 2
	JwtExpired                        Status = 3
	JwtBadFormat                      Status = 4
	JwtHeaderParseErrorBadBase64      Status = 5
	JwtHeaderParseErrorBadJSON        Status = 6
	JwtHeaderBadAlg                   Status = 7
	JwtHeaderNotImplementedAlg        Status = 8
	JwtHeaderBadKid                   Status = 9
	JwtPayloadParseErrorBadBase64     Status = 10
	JwtPayloadParseErrorBadJSON       Status = 11
	JwtPayloadParseErrorIssNotString  Status = 12
	JwtPayloadParseErrorSubNotString  Status = 13
	JwtPayloadParseErrorIatNotInteger Status = 14
	JwtPayloadParseErrorIatOutOfRange Status = 15
	JwtPayloadParseErrorNbfNotInteger Status = 16
	JwtPayloadParseErrorNbfOutOfRange Status = 17
	JwtPayloadParseErrorExpNotInteger Status = 18
	JwtPayloadParseErrorExpOutOfRange Status = 19
	JwtPayloadParseErrorJtiNotString  Status = 20
	JwtPayloadParseErrorAudNotString  Status = 21
	JwtSignatureParseErrorBadBase64   Status = 22
	JwtEd25519SignatureWrongLength    Status = 23
	JwtUnknownIssuer                  Status = 24
	JwtAudienceNotAllowed             Status = 25
	JwtVerificationFail               Status = 26
	JwtMultipleTokens                 Status = 27
	JwksParseError                    Status = 28
	JwksNoKeys                        Status = 29
	JwksBadKeys                       Status = 30
	JwksNoValidKeys                   Status = 31
	JwksKidAlgMismatch                Status = 32
	JwksRsaParseError                 Status = 33
	JwksEcCreateKeyFail               Status = 34
	JwksEcXorYBadBase64               Status = 35
	JwksEcParseError                  Status = 36
	JwksOctBadBase64                  Status = 37
	JwksOKPXBadBase64                 Status = 38
	JwksOKPXWrongLength               Status = 39
	JwksFetchFail                     Status = 40
	JwksMissingKty                    Status = 41
	JwksBadKty                        Status = 42
	JwksNotImplementedKty             Status = 43
	JwksRSAKeyBadAlg                  Status = 44
	JwksRSAKeyMissingN                Status = 45
	JwksRSAKeyBadN                    Status = 46
	JwksRSAKeyMissingE                Status = 47
	JwksRSAKeyBadE                    Status = 48
	JwksECKeyBadAlg                   Status = 49
	JwksECKeyBadCrv                   Status = 50
	JwksECKeyAlgOrCrvUnsupported      Status = 51
	JwksECKeyAlgNotCompatibleWithCrv  Status = 52
	JwksECKeyMissingX                 Status = 53
	JwksECKeyBadX                     Status = 54
	JwksECKeyMissingY                 Status = 55
	JwksECKeyBadY                     Status = 56
	JwksHMACKeyBadAlg                 Status = 57
	JwksHMACKeyMissingK               Status = 58
	JwksHMACKeyBadK                   Status = 59
	JwksOKPKeyBadAlg                  Status = 60
	JwksOKPKeyMissingCrv              Status = 61
	JwksOKPKeyBadCrv                  Status = 62
	JwksOKPKeyCrvUnsupported          Status = 63
	JwksOKPKeyMissingX                Status = 64
	JwksOKPKeyBadX                    Status = 65
	JwksX509BioWriteError             Status = 66
	JwksX509ParseError                Status = 67
	JwksX509GetPubkeyError            Status = 68
	JwksPemNotImplementedKty          Status = 69
	JwksPemBadBase64                  Status = 70
	JwksPemGetRawEd25519Error         Status = 71
	JwksBioAllocError                 Status = 72
)

var statusText = [...]string{
	OK:                                "OK",
	JwtMissed:                         "Jwt is missing",
	JwtNotYetValid:                    "Jwt not yet valid",
	JwtExpired:                        "Jwt is expired",
	JwtBadFormat:                      "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
	JwtHeaderParseErrorBadBase64:      "Jwt header is an invalid Base64url encoded",
	JwtHeaderParseErrorBadJSON:        "Jwt header is an invalid JSON",
	JwtHeaderBadAlg:                   "Jwt header [alg] field is required and must be a string",
	JwtHeaderNotImplementedAlg:        "Jwt header [alg] is not supported",
	JwtHeaderBadKid:                   "Jwt header [kid] field is not a string",
	JwtPayloadParseErrorBadBase64:     "Jwt payload is an invalid Base64url encoded",
	JwtPayloadParseErrorBadJSON:       "Jwt payload is an invalid JSON",
	JwtPayloadParseErrorIssNotString:  "Jwt payload [iss] field is not a string",
	JwtPayloadParseErrorSubNotString:  "Jwt payload [sub] field is not a string",
	JwtPayloadParseErrorIatNotInteger: "Jwt payload [iat] field is not an integer",
	JwtPayloadParseErrorIatOutOfRange: "Jwt payload [iat] field is not a positive 64 bit integer",
	JwtPayloadParseErrorNbfNotInteger: "Jwt payload [nbf] field is not an integer",
	JwtPayloadParseErrorNbfOutOfRange: "Jwt payload [nbf] field is not a positive 64 bit integer",
	JwtPayloadParseErrorExpNotInteger: "Jwt payload [exp] field is not an integer",
	JwtPayloadParseErrorExpOutOfRange: "Jwt payload [exp] field is not a positive 64 bit integer",
	JwtPayloadParseErrorJtiNotString:  "Jwt payload [jti] field is not a string",
	JwtPayloadParseErrorAudNotString:  "Jwt payload [aud] field is not a string or string list",
	JwtSignatureParseErrorBadBase64:   "Jwt signature is an invalid Base64url encoded",
	JwtEd25519SignatureWrongLength:    "Jwt ED25519 signature is wrong length",
	JwtUnknownIssuer:                  "Jwt issuer is not configured",
	JwtAudienceNotAllowed:             "Audiences in Jwt are not allowed",
	JwtVerificationFail:               "Jwt verification fails",
	JwtMultipleTokens:                 "Found multiple Jwt tokens",
	JwksParseError:                    "Jwks is an invalid JSON",
	JwksNoKeys:                        "Jwks does not have [keys] field",
	JwksBadKeys:                       "[keys] in Jwks is not an array",
	JwksNoValidKeys:                   "Jwks doesn't have any valid public key",
	JwksKidAlgMismatch:                "Jwks doesn't have key to match kid or alg from Jwt",
	JwksRsaParseError:                 "Jwks RSA [n] or [e] field is missing or has a parse error",
	JwksEcCreateKeyFail:               "Jwks EC create key fail",
	JwksEcXorYBadBase64:               "Jwks EC [x] or [y] field is an invalid Base64.",
	JwksEcParseError:                  "Jwks EC [x] and [y] fields have a parse error.",
	JwksOctBadBase64:                  "Jwks Oct key is an invalid Base64",
	JwksOKPXBadBase64:                 "Jwks OKP [x] field is an invalid Base64.",
	JwksOKPXWrongLength:               "Jwks OKP [x] field is wrong length.",
	JwksFetchFail:                     "Jwks remote fetch is failed",
	JwksMissingKty:                    "[kty] is missing in [keys]",
	JwksBadKty:                        "[kty] is bad in [keys]",
	JwksNotImplementedKty:             "[kty] is not supported in [keys]",
	JwksRSAKeyBadAlg:                  "[alg] is not started with [RS] or [PS] for an RSA key",
	JwksRSAKeyMissingN:                "[n] field is missing for a RSA key",
	JwksRSAKeyBadN:                    "[n] field is not string for a RSA key",
	JwksRSAKeyMissingE:                "[e] field is missing for a RSA key",
	JwksRSAKeyBadE:                    "[e] field is not string for a RSA key",
	JwksECKeyBadAlg:                   "[alg] is not started with [ES] for an EC key",
	JwksECKeyBadCrv:                   "[crv] field is not string for an EC key",
	JwksECKeyAlgOrCrvUnsupported:      "[crv] or [alg] field is not supported for an EC key",
	JwksECKeyAlgNotCompatibleWithCrv:  "[crv] field specified is not compatible with [alg] for an EC key",
	JwksECKeyMissingX:                 "[x] field is missing for an EC key",
	JwksECKeyBadX:                     "[x] field is not string for an EC key",
	JwksECKeyMissingY:                 "[y] field is missing for an EC key",
	JwksECKeyBadY:                     "[y] field is not string for an EC key",
	JwksHMACKeyBadAlg:                 "[alg] does not start with [HS] for an HMAC key",
	JwksHMACKeyMissingK:               "[k] field is missing for an HMAC key",
	JwksHMACKeyBadK:                   "[k] field is not string for an HMAC key",
	JwksOKPKeyBadAlg:                  "[alg] is not [EdDSA] for an OKP key",
	JwksOKPKeyMissingCrv:              "[crv] field is missing for an OKP key",
	JwksOKPKeyBadCrv:                  "[crv] field is not string for an OKP key",
	JwksOKPKeyCrvUnsupported:          "[crv] field is not supported for an OKP key",
	JwksOKPKeyMissingX:                "[x] field is missing for an OKP key",
	JwksOKPKeyBadX:                    "[x] field is not string for an OKP key",
	JwksX509BioWriteError:             "X509 parse pubkey internal fails: memory allocation",
	JwksX509ParseError:                "X509 parse pubkey fails",
	JwksX509GetPubkeyError:            "X509 parse pubkey internal fails: get pubkey",
	JwksPemNotImplementedKty:          "PEM Key type is not supported",
	JwksPemBadBase64:                  "PEM pubkey parse fails",
	JwksPemGetRawEd25519Error:         "PEM failed to get raw ED25519 key",
	JwksBioAllocError:                 "Failed to create BIO due to memory allocation failure",
}

// String returns Envoy's message for the status.
func (s Status) String() string {
	if int(s) < len(statusText) {
		return statusText[s]
	}
	return "unknown status"
}
