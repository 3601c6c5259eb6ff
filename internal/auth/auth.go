package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
)

// Prefix starts every token, so that a leaked one is easy to recognise
// (and to search for in logs and repositories).
const Prefix = "tw_"

// Metadata keys.
const (
	// HeaderAuthorization carries "Bearer <token>" from clients and workers.
	HeaderAuthorization = "authorization"
	// HeaderUser carries the caller's user from the pool to a worker.
	HeaderUser = "x-taskworker-user"
	// TrailerWorker is set by a worker on every response: a response that
	// has it came from the worker's code, not from a broken connection.
	TrailerWorker = "x-taskworker-worker"
)

var (
	// ErrNoToken means a request carried no bearer token.
	ErrNoToken = errors.New("no API token: pass --token or set TASKWORKER_TOKEN")
	// ErrMalformedToken means the token is not of the form tw_ and 43
	// characters: mistyped, cut short, or something else pasted.
	ErrMalformedToken = errors.New("malformed API token: a token is " + Prefix + " followed by 43 characters; copy it whole from 'taskworker token create' or the pool's admin.token")
)

// NewToken returns a new random token.
func NewToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return Prefix + base64.RawURLEncoding.EncodeToString(b)
}

// NewSecret returns a random string for internal identifiers, such as the
// cluster id.
func NewSecret() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Hash returns the form under which a token is stored.
func Hash(token string) string {
	sum := sha256.Sum256([]byte(token))
	var buf [2 * sha256.Size]byte // one allocation, the string: every call pays it
	return string(hex.AppendEncode(buf[:0], sum[:]))
}

// Validate checks a token's form without looking it up.
func Validate(token string) error {
	if token == "" {
		return ErrNoToken
	}
	if !strings.HasPrefix(token, Prefix) || len(token) != len(Prefix)+43 {
		return ErrMalformedToken
	}
	return nil
}

// FromIncoming returns the bearer token of an incoming request.
func FromIncoming(ctx context.Context) (string, error) {
	// One header, not a copy of them all (FromIncomingContext copies every
	// key and value): this runs on every call.
	vals := metadata.ValueFromIncomingContext(ctx, HeaderAuthorization)
	if len(vals) == 0 {
		return "", ErrNoToken
	}
	scheme, token, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", errors.New(`malformed authorization header: want "Bearer <token>"`)
	}
	token = strings.TrimSpace(token)
	return token, Validate(token)
}

// Bearer is gRPC per-RPC credentials that send a token.
type Bearer struct {
	Token string
	// Secure, when set, refuses to send the token over a connection without
	// transport security.
	Secure bool
}

var _ credentials.PerRPCCredentials = Bearer{}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (b Bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{HeaderAuthorization: "Bearer " + b.Token}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (b Bearer) RequireTransportSecurity() bool { return b.Secure }
