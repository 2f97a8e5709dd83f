package config

// Code identifies a kind of diagnostic. Codes are stable: scripts and
// alerts may match on them. docs/operations.md lists them all.
type Code string

// Reading and decoding files.
const (
	CodeInvalidYAML       Code = "WF0101" // the file is not valid YAML
	CodeFileTooLarge      Code = "WF0102" // the file is over MaxFileSize
	CodeUnreadableFile    Code = "WF0103" // dangling or looping symbolic link, read error
	CodeNotRegularFile    Code = "WF0104" // a named pipe, socket, device or directory named *.yaml
	CodeTooManyProblems   Code = "WF0105" // further diagnostics of a file are not shown
	CodeKubernetesObject  Code = "WF0106" // a Kubernetes object that is not mesh config (a Deployment, a Service, ...): skipped (warning)
	CodeInvalidResource   Code = "WF0110" // kind, apiVersion or metadata
	CodeUnknownField      Code = "WF0111" // a field the resource's schema does not have
	CodeInvalidField      Code = "WF0112" // a value of the wrong type, an unparsable duration, ...
	CodeInvalidValue      Code = "WF0120" // a value Istio's validation rules (or the proxy) reject
	CodeDuplicateResource Code = "WF0130" // the same kind, namespace and name twice
)

// Conflicts between resources.
const (
	CodeVirtualServiceConflict  Code = "WF0201" // two VirtualServices for one host
	CodeDestinationRulesMerged  Code = "WF0202" // DestinationRules for one host merged (info)
	CodeDestinationRuleConflict Code = "WF0203" // part of a DestinationRule loses a conflict
	CodeServiceEntryConflict    Code = "WF0204" // two ServiceEntries for one host
	CodePeerAuthnConflict       Code = "WF0205" // two PeerAuthentications at one level for one workload
)

// References between resources.
const (
	CodeUndefinedSubset  Code = "WF0301" // a route names a subset no DestinationRule in force defines
	CodeUnknownHost      Code = "WF0302" // a destination host no registry knows
	CodeSubsetStillUsed  Code = "WF0303" // a change would remove a subset a route in force uses
	CodeDelegateNotFound Code = "WF0304" // a delegate VirtualService that does not exist
	CodeGatewayNotFound  Code = "WF0305" // a VirtualService bound to a Gateway that does not exist
	CodeRouteNotAttached Code = "WF0306" // a Gateway API route no listener admits, or a Gateway not served
	CodeRefNotPermitted  Code = "WF0307" // a Gateway API reference Weft cannot or may not follow (ReferenceGrant)
	CodeHostNotOnGateway Code = "WF0308" // a VirtualService bound to a Gateway none of whose servers serves its hosts
)

// The traffic-impact guard.
const (
	CodeTrafficHeld     Code = "WF0401" // a change would send served traffic to no endpoints; held
	CodeUnservedTraffic Code = "WF0402" // traffic goes to a destination with no endpoints
	CodeGuardOverridden Code = "WF0403" // applied despite the guard, by annotation
)

// Analysis (weft analyze).
const (
	CodeUnreachableRoute      Code = "WF0501" // a route after a catch-all can never match
	CodeUnusedDestinationRule Code = "WF0502" // a DestinationRule whose subsets no route uses
	CodeStarvedSubset         Code = "WF0503" // a subset every route gives weight 0
	CodeSubsetNoEndpoints     Code = "WF0504" // a subset that selects no endpoint
	CodeHostNotInRegistry     Code = "WF0505" // a VirtualService for a host no registry knows
	CodeStrictWithoutSidecar  Code = "WF0506" // STRICT mTLS for workloads not marked as having a sidecar
	CodeRateLimitService      Code = "WF0507" // a RateLimit's global.service no proxy can call
	CodeGatewayCredential     Code = "WF0508" // a Gateway's credentialName no Secret of its gateways' namespace holds
)

// Rejections by proxies.
const (
	CodeProxyRejected Code = "WF0601" // a proxy NACKed config generated from these resources
)
