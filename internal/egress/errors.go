package egress

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Kind is what went wrong with an outbound request, as the function that
// made it sees it: each kind is one gRPC code, so the pool's mapping is here
// and nowhere else.
type Kind uint8

const (
	KindUnknown     Kind = iota // not ours: Unknown
	KindInvalid                 // a rule, URL, template or request body is wrong: InvalidArgument
	KindDenied                  // the policy refuses the host, the address or the secret: PermissionDenied
	KindExhausted               // a response, the call's request budget or the redirects ran out: ResourceExhausted
	KindTimeout                 // the request's time ran out: DeadlineExceeded
	KindCanceled                // the caller canceled: Canceled
	KindUnavailable             // the destination did not answer (DNS, connect, TLS, protocol): Unavailable
)

var kindCodes = [...]codes.Code{
	KindUnknown:     codes.Unknown,
	KindInvalid:     codes.InvalidArgument,
	KindDenied:      codes.PermissionDenied,
	KindExhausted:   codes.ResourceExhausted,
	KindTimeout:     codes.DeadlineExceeded,
	KindCanceled:    codes.Canceled,
	KindUnavailable: codes.Unavailable,
}

// Code is the gRPC code of errors of kind k.
func (k Kind) Code() codes.Code { return kindCodes[k] }

type kindError struct {
	kind Kind
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Kind() Kind    { return e.kind }

// The sentinels, by the phase that returns them. Every error of this package
// wraps one of them, and its message says which rule refused and what to
// change.
var (
	// Parsing the operator's and the deployer's settings.
	ErrInvalidRule = &kindError{KindInvalid, "invalid host rule"}
	ErrInvalidNet  = &kindError{KindInvalid, "invalid network"}

	// Checking one request before it leaves.
	ErrInvalidURL       = &kindError{KindInvalid, "invalid URL"}
	ErrHostNotAllowed   = &kindError{KindDenied, "host not allowed"}
	ErrAddressRefused   = &kindError{KindDenied, "address refused"}
	ErrTemplate         = &kindError{KindInvalid, "invalid secret template"}
	ErrSecretNotGranted = &kindError{KindDenied, "secret not granted"}
	ErrRequestTooLarge  = &kindError{KindInvalid, "request body too large"}
	ErrTooManyRequests  = &kindError{KindExhausted, "too many outbound requests"}

	// Carrying it out.
	ErrTooManyRedirects = &kindError{KindExhausted, "too many redirects"}
	ErrResponseTooLarge = &kindError{KindExhausted, "response too large"}
	ErrTimeout          = &kindError{KindTimeout, "request timed out"}
	ErrUnreachable      = &kindError{KindUnavailable, "destination unreachable"}
)

// KindOf is the kind of err: that of the first error in its chain that has
// one, or of a context error.
func KindOf(err error) Kind {
	var k interface{ Kind() Kind }
	switch {
	case errors.As(err, &k):
		return k.Kind()
	case errors.Is(err, context.DeadlineExceeded):
		return KindTimeout
	case errors.Is(err, context.Canceled):
		return KindCanceled
	}
	return KindUnknown
}

// GRPCCode is the gRPC code the function sees for err.
func GRPCCode(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	return KindOf(err).Code()
}

// GRPCStatus is the status the function sees for err: its code and its
// message, which names the rule that refused and what to do. Messages never
// hold a secret's value (see Scope).
func GRPCStatus(err error) *status.Status {
	if err == nil {
		return status.New(codes.OK, "")
	}
	return status.New(GRPCCode(err), err.Error())
}
