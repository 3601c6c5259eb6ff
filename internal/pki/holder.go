package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNoCertificate means a node has no certificate yet: a worker that has
// not enrolled.
var ErrNoCertificate = errors.New("no certificate yet: the worker has not enrolled with the pool")

// Holder holds a node's current certificate, which handshakes read and
// renewal replaces without a restart. With a renew function, Get issues a
// new certificate once two thirds of the current one's life have passed
// (the pool's own); without, the owner calls Set (a worker's, renewed by
// the pool).
type Holder struct {
	cur   atomic.Pointer[tls.Certificate]
	mu    sync.Mutex // serialises renewals
	renew func() (tls.Certificate, error)
}

// NewHolder returns a holder that issues its certificates with renew, and
// issues the first now.
func NewHolder(renew func() (tls.Certificate, error)) (*Holder, error) {
	h := &Holder{renew: renew}
	if _, err := h.Get(); err != nil {
		return nil, err
	}
	return h, nil
}

// Set replaces the certificate (its Leaf must be set).
func (h *Holder) Set(c tls.Certificate) { h.cur.Store(&c) }

// Current returns the certificate, or nil if there is none.
func (h *Holder) Current() *tls.Certificate { return h.cur.Load() }

// Get returns the certificate, renewing it first if it is due.
func (h *Holder) Get() (*tls.Certificate, error) {
	c := h.cur.Load()
	if h.renew == nil || (c != nil && !NeedsRenewal(c.Leaf, time.Now())) {
		if c == nil {
			return nil, ErrNoCertificate
		}
		return c, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if c = h.cur.Load(); c != nil && !NeedsRenewal(c.Leaf, time.Now()) {
		return c, nil
	}
	next, err := h.renew()
	if err != nil {
		if c != nil && time.Now().Before(c.Leaf.NotAfter) {
			return c, nil // still valid: try again at the next handshake
		}
		return nil, err
	}
	h.cur.Store(&next)
	return &next, nil
}

// NeedsRenewal reports whether two thirds of a certificate's life have
// passed at now.
func NeedsRenewal(leaf *x509.Certificate, now time.Time) bool {
	return !now.Before(RenewAt(leaf))
}

// RenewAt is when a certificate is due for renewal: two thirds into its
// life, counted from when it was issued (NotBefore is set back by
// backdate, for clocks a little behind the issuer's).
func RenewAt(leaf *x509.Certificate) time.Time {
	issued := leaf.NotBefore.Add(backdate)
	if !issued.Before(leaf.NotAfter) {
		issued = leaf.NotBefore
	}
	return issued.Add(leaf.NotAfter.Sub(issued) * 2 / 3)
}

// Clear drops the certificate (one the peer no longer accepts).
func (h *Holder) Clear() { h.cur.Store(nil) }
