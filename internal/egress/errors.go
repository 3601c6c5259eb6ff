package egress

import "github.com/hivemind/taskworker/internal/serving"

// The sentinels, by the phase that returns them. Every error of this package
// wraps one of them, and its message says which rule refused and what to
// change. Each has a serving.Kind, so serving.GRPCStatus maps any of them
// (policy refusals PermissionDenied, malformed input InvalidArgument, limits
// ResourceExhausted, time DeadlineExceeded, a destination that does not
// answer Unavailable).
var (
	// Parsing the operator's and the deployer's settings.
	ErrInvalidRule = serving.NewError(serving.KindInvalid, "invalid host rule")
	ErrInvalidNet  = serving.NewError(serving.KindInvalid, "invalid network")

	// Checking one request before it leaves.
	ErrInvalidURL       = serving.NewError(serving.KindInvalid, "invalid URL")
	ErrHostNotAllowed   = serving.NewError(serving.KindDenied, "host not allowed")
	ErrAddressRefused   = serving.NewError(serving.KindDenied, "address refused")
	ErrTemplate         = serving.NewError(serving.KindInvalid, "invalid secret template")
	ErrSecretNotGranted = serving.NewError(serving.KindDenied, "secret not granted")
	ErrRequestTooLarge  = serving.NewError(serving.KindInvalid, "request body too large")
	ErrTooManyRequests  = serving.NewError(serving.KindExhausted, "too many outbound requests")

	// Carrying it out.
	ErrTooManyRedirects = serving.NewError(serving.KindExhausted, "too many redirects")
	ErrResponseTooLarge = serving.NewError(serving.KindExhausted, "response too large")
	ErrTimeout          = serving.NewError(serving.KindTimeout, "request timed out")
	ErrUnreachable      = serving.NewError(serving.KindUnavailable, "destination unreachable")
)
