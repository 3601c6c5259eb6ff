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
	"sync/atomic"
	"time"
	"unsafe"

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
	signers sync.Pool // of *signer

	// Calls in flight here, by their tokens' nonce: a count, unique within
	// this replica, whose tokens also name the replica. Kept in shards by
	// nonce, so that concurrent calls rarely wait for each other's lock.
	nonces atomic.Uint64
	flight [flightShards]struct {
		mu    sync.Mutex
		calls map[uint64]chan struct{} // made when a request first asks for it, closed when the call ends
		_     [48]byte                 // a cache line each
	}
}

const flightShards = 16

// signer is an HMAC-SHA256 state with the key, reset and used again, and
// room to build a token's claims and signature without allocating.
type signer struct {
	mac    hash.Hash
	claims [256]byte
	sum    [sha256.Size]byte
	nonce  [13]byte // a uint64 in base 36
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
	c := &calls{key: key, replica: base64.RawURLEncoding.EncodeToString(r[:])}
	for i := range c.flight {
		c.flight[i].calls = map[uint64]chan struct{}{}
	}
	return c
}

// begin mints the token of one attempt of a call on worker, and records
// the call in flight until end is called with the nonce it returns.
func (c *calls) begin(ctx context.Context, worker string, call egress.Call) (token string, nonce uint64) {
	exp := time.Now().Add(maxCallTokenLife)
	if dl, ok := ctx.Deadline(); ok && dl.Before(exp) {
		exp = dl
	}
	nonce = c.nonces.Add(1)
	sg := c.signer()
	payload := (&tokenClaims{Worker: worker, Owner: call.Owner, Function: call.Function, Caller: call.Caller,
		AllowHosts: call.AllowHosts, Expires: exp.UnixMilli(), Replica: c.replica,
		Nonce: unsafe.String(&sg.nonce[0], len(strconv.AppendUint(sg.nonce[:0], nonce, 36)))}).appendJSON(sg.claims[:0])
	enc := base64.RawURLEncoding
	var buf [512]byte
	b := enc.AppendEncode(buf[:0], payload)
	b = append(b, '.')
	b = enc.AppendEncode(b, sg.sign(sg.sum[:0], payload))
	c.signers.Put(sg)
	sh := &c.flight[nonce%flightShards]
	sh.mu.Lock()
	sh.calls[nonce] = nil
	sh.mu.Unlock()
	return string(b), nonce
}

// end ends the call begin recorded under nonce: its token is refused here
// from now on, and its requests' Done is closed.
func (c *calls) end(nonce uint64) {
	sh := &c.flight[nonce%flightShards]
	sh.mu.Lock()
	done := sh.calls[nonce]
	delete(sh.calls, nonce)
	if done != nil {
		close(done)
	}
	sh.mu.Unlock()
}

// inFlight returns the channel closed when the call in flight here under
// nonce ends, or nil if it has ended.
func (c *calls) inFlight(nonce uint64) <-chan struct{} {
	sh := &c.flight[nonce%flightShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	done, ok := sh.calls[nonce]
	if ok && done == nil {
		done = make(chan struct{})
		sh.calls[nonce] = done
	}
	return done
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

// signer returns a signer of this network's tokens.
func (c *calls) signer() *signer {
	sg, _ := c.signers.Get().(*signer)
	if sg == nil {
		sg = &signer{mac: hmac.New(sha256.New, c.key)}
	}
	return sg
}

// sign appends payload's HMAC to dst.
func (sg *signer) sign(dst, payload []byte) []byte {
	sg.mac.Reset()
	sg.mac.Write(payload)
	return sg.mac.Sum(dst)
}

// ResolveCall implements egress.CallResolver.
func (c *calls) ResolveCall(_ context.Context, worker, token string) (egress.Call, error) {
	p, sig, ok := strings.Cut(token, ".")
	if !ok {
		return egress.Call{}, egress.ErrUnknownCall
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(p)
	mac, err2 := base64.RawURLEncoding.DecodeString(sig)
	if err1 != nil || err2 != nil {
		return egress.Call{}, egress.ErrUnknownCall
	}
	sg := c.signer()
	valid := hmac.Equal(mac, sg.sign(sg.sum[:0], payload))
	c.signers.Put(sg)
	if !valid {
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
		nonce, err := strconv.ParseUint(claims.Nonce, 36, 64)
		if err != nil {
			return egress.Call{}, egress.ErrUnknownCall
		}
		if call.Done = c.inFlight(nonce); call.Done == nil {
			return egress.Call{}, egress.ErrUnknownCall // its call has ended
		}
	}
	return call, nil
}
