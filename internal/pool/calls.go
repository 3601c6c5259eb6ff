package pool

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hivemind/taskworker/internal/egress"
	"github.com/hivemind/taskworker/internal/jsonenc"
	"github.com/hivemind/taskworker/internal/keyring"
)

// calls mints the token each forwarded call carries (FunctionCallRequest's
// call_token) and resolves it when the worker asks, on the function's
// behalf, for a secret or an outbound request (egress.CallResolver).
//
// A token is signed (HMAC-SHA256) with a key every replica shares: wrapped
// by the master key in etcd. The worker's connection may reach another
// replica than the one that forwarded the call, and that replica checks the
// signature, the worker it names and its expiry (the call's deadline). The
// replica that forwarded the call also keeps it while it runs, so that a
// token is refused there as soon as its call ends, and the call's requests
// share one budget (Call.Done).
type calls struct {
	key     []byte
	replica string    // this replica's own, in the tokens it mints
	macs    sync.Pool // of hash.Hash: HMAC-SHA256 with key, reset and used again

	mu     sync.Mutex
	flight map[string]chan struct{} // a token's nonce -> closed when the call ends
}

// tokenClaims is what a token says, signed.
type tokenClaims struct {
	Worker     string   `json:"w"`
	Owner      string   `json:"o"`
	Function   string   `json:"f"`
	Caller     string   `json:"c"`
	AllowHosts []string `json:"h,omitempty"`
	Expires    int64    `json:"e"` // Unix milliseconds
	Replica    string   `json:"r"`
	Nonce      string   `json:"n"`
}

// maxCallTokenLife bounds a token whose call has no deadline.
const maxCallTokenLife = time.Hour

func callTokenKey(prefix string) string { return prefix + "keyring/call-tokens" }

// newCalls reads the shared signing key from etcd, making it on the first
// start of the network (or again when the master key that wrapped it was
// retired: tokens of calls in flight then fail, and their reads with them).
func newCalls(ctx context.Context, cli *clientv3.Client, prefix string, ring *keyring.Keyring) (*calls, error) {
	key := callTokenKey(prefix)
	const wrapContext = "call tokens"
	for range 5 {
		resp, err := cli.Get(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("reading the call token key: %w", err)
		}
		var rev int64
		if len(resp.Kvs) > 0 {
			rev = resp.Kvs[0].ModRevision
			if d, err := ring.Unwrap(string(resp.Kvs[0].Value), wrapContext); err == nil {
				return newCallsWithKey(d[:]), nil
			}
		}
		d := keyring.NewDataKey()
		wrapped, err := ring.Wrap(d, wrapContext)
		if err != nil {
			return nil, err
		}
		tx, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(clientv3.OpPut(key, wrapped)).Commit()
		if err != nil {
			return nil, fmt.Errorf("recording the call token key: %w", err)
		}
		if tx.Succeeded {
			return newCallsWithKey(d[:]), nil
		}
	}
	return nil, fmt.Errorf("the call token key kept changing under this replica; try again")
}

func newCallsWithKey(key []byte) *calls {
	var r [9]byte
	rand.Read(r[:])
	return &calls{key: key, replica: base64.RawURLEncoding.EncodeToString(r[:]), flight: map[string]chan struct{}{}}
}

// begin mints the token of one attempt of a call on worker, and returns the
// function that ends it.
func (c *calls) begin(ctx context.Context, worker string, call egress.Call) (string, func()) {
	exp := time.Now().Add(maxCallTokenLife)
	if dl, ok := ctx.Deadline(); ok && dl.Before(exp) {
		exp = dl
	}
	var nonce [12]byte
	rand.Read(nonce[:])
	var nonce64 [16]byte
	base64.RawURLEncoding.Encode(nonce64[:], nonce[:])
	var buf [256]byte
	payload := (&tokenClaims{Worker: worker, Owner: call.Owner, Function: call.Function, Caller: call.Caller,
		AllowHosts: call.AllowHosts, Expires: exp.UnixMilli(), Replica: c.replica, Nonce: string(nonce64[:])}).appendJSON(buf[:0])
	var mac [sha256.Size]byte
	enc := base64.RawURLEncoding
	b := make([]byte, 0, enc.EncodedLen(len(payload))+1+enc.EncodedLen(len(mac)))
	b = enc.AppendEncode(b, payload)
	b = append(b, '.')
	b = enc.AppendEncode(b, c.sign(mac[:0], payload))
	token := string(b)
	// Kept by nonce, not by the whole token: a shorter key to hash twice
	// a call, and as unique (ResolveCall checks the token's signature and
	// replica before it looks).
	key := string(nonce64[:])
	done := make(chan struct{})
	c.mu.Lock()
	c.flight[key] = done
	c.mu.Unlock()
	return token, func() {
		c.mu.Lock()
		delete(c.flight, key)
		c.mu.Unlock()
		close(done)
	}
}

// appendJSON appends the claims as encoding/json encodes them, byte for
// byte (the same names in the same order, the same omitempty), without its
// reflection: a token is minted for every call. TestTokenClaimsJSON and
// FuzzTokenClaimsJSON check it against encoding/json.
func (t *tokenClaims) appendJSON(b []byte) []byte {
	b = append(b, `{"w":`...)
	b = jsonenc.AppendString(b, t.Worker)
	b = append(b, `,"o":`...)
	b = jsonenc.AppendString(b, t.Owner)
	b = append(b, `,"f":`...)
	b = jsonenc.AppendString(b, t.Function)
	b = append(b, `,"c":`...)
	b = jsonenc.AppendString(b, t.Caller)
	if len(t.AllowHosts) > 0 {
		b = append(b, `,"h":`...)
		b = jsonenc.AppendStrings(b, t.AllowHosts)
	}
	b = append(b, `,"e":`...)
	b = strconv.AppendInt(b, t.Expires, 10)
	b = append(b, `,"r":`...)
	b = jsonenc.AppendString(b, t.Replica)
	b = append(b, `,"n":`...)
	b = jsonenc.AppendString(b, t.Nonce)
	return append(b, '}')
}

// sign appends payload's HMAC to dst.
func (c *calls) sign(dst, payload []byte) []byte {
	m, _ := c.macs.Get().(hash.Hash)
	if m == nil {
		m = hmac.New(sha256.New, c.key)
	}
	m.Reset()
	m.Write(payload)
	dst = m.Sum(dst)
	c.macs.Put(m)
	return dst
}

// ResolveCall implements egress.CallResolver.
func (c *calls) ResolveCall(_ context.Context, worker, token string) (egress.Call, error) {
	p, sig, ok := strings.Cut(token, ".")
	if !ok {
		return egress.Call{}, egress.ErrUnknownCall
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(p)
	mac, err2 := base64.RawURLEncoding.DecodeString(sig)
	if err1 != nil || err2 != nil || !hmac.Equal(mac, c.sign(nil, payload)) {
		return egress.Call{}, egress.ErrUnknownCall
	}
	var claims tokenClaims
	if err := json.Unmarshal(payload, &claims); err != nil {
		return egress.Call{}, egress.ErrUnknownCall
	}
	if time.Now().UnixMilli() > claims.Expires {
		return egress.Call{}, egress.ErrUnknownCall
	}
	if claims.Worker != worker {
		return egress.Call{}, egress.ErrWrongWorker
	}
	call := egress.Call{Owner: claims.Owner, Function: claims.Function, Caller: claims.Caller, AllowHosts: claims.AllowHosts}
	if claims.Replica == c.replica {
		c.mu.Lock()
		done, here := c.flight[claims.Nonce]
		c.mu.Unlock()
		if !here {
			return egress.Call{}, egress.ErrUnknownCall // its call has ended
		}
		call.Done = done
	}
	return call, nil
}
