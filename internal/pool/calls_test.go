package pool

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hivemind/taskworker/internal/egress"
)

// A worker's call token, as an attacker holding a worker would try it.
func TestCallTokens(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	here, there := newCallsWithKey(key), newCallsWithKey(key)
	other := newCallsWithKey([]byte("another network's key, 32 bytes!"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	call := egress.Call{Owner: "bob", Function: "report", Caller: "bob", AllowHosts: []string{"https://api.example"}}
	token, nonce := here.begin(ctx, "worker_001", call)

	got, err := here.ResolveCall(ctx, "worker_001", token)
	if err != nil || got.Owner != "bob" || got.Function != "report" || got.AllowHosts[0] != "https://api.example" || got.Done == nil {
		t.Fatalf("the forwarding replica resolves %+v, %v", got, err)
	}
	if got, err := there.ResolveCall(ctx, "worker_001", token); err != nil || got.Owner != "bob" || got.Done != nil {
		t.Fatalf("another replica resolves %+v, %v", got, err)
	}
	payload, sig, _ := strings.Cut(token, ".")
	forged := strings.Replace(payload, payload[len(payload)-6:], "AAAAAA", 1) + "." + sig
	for _, tc := range []struct {
		name    string
		c       *calls
		worker  string
		token   string
		wantErr error
	}{
		{"another worker", there, "worker_002", token, egress.ErrWrongWorker},
		{"another network", other, "worker_001", token, egress.ErrUnknownCall},
		{"a changed payload", there, "worker_001", forged, egress.ErrUnknownCall},
		{"no signature", there, "worker_001", payload, egress.ErrUnknownCall},
		{"garbage", there, "worker_001", "x.y", egress.ErrUnknownCall},
	} {
		if _, err := tc.c.ResolveCall(ctx, tc.worker, tc.token); !errors.Is(err, tc.wantErr) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.wantErr)
		}
	}
	select {
	case <-got.Done:
		t.Fatal("Done is closed while the call runs")
	default:
	}
	here.end(nonce)
	select {
	case <-got.Done:
	default:
		t.Fatal("Done is still open after the call ended")
	}
	if _, err := here.ResolveCall(ctx, "worker_001", token); !errors.Is(err, egress.ErrUnknownCall) {
		t.Errorf("the forwarding replica after the call ended: %v", err)
	}
	short, cancelShort := context.WithTimeout(ctx, time.Millisecond)
	defer cancelShort()
	expired, _ := here.begin(short, "worker_001", call)
	time.Sleep(5 * time.Millisecond)
	if _, err := there.ResolveCall(ctx, "worker_001", expired); !errors.Is(err, egress.ErrUnknownCall) {
		t.Errorf("a token past its call's deadline: %v", err)
	}
}

// A token's claims, encoded without encoding/json's reflection, are what it
// encodes, byte for byte.
func TestTokenClaimsJSON(t *testing.T) {
	for _, c := range []tokenClaims{
		{Worker: "worker_001", Owner: "bob", Function: "report", Caller: "bob", Expires: 1767225600000, Replica: "abcDEF123", Nonce: "nonce-nonce_1234"},
		{Worker: "w", AllowHosts: []string{"https://api.example", "*.example.org"}, Expires: -1},
		{Owner: "quote\" backslash\\ tab\t newline\n nul\x00 del\x7f <&>", Function: "é 世界 🚀 \u2028"},
		{Caller: "bad \xff utf-8 \xe2\x82", AllowHosts: []string{""}},
	} {
		want, err := json.Marshal(&c)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.appendJSON(nil); string(got) != string(want) {
			t.Errorf("encoded %s, want %s", got, want)
		}
	}
}

func FuzzTokenClaimsJSON(f *testing.F) {
	f.Add("worker_001", "bob", "https://api.example", int64(1767225600000))
	f.Add("\"\\\x00<", "\xff", "é", int64(-5))
	f.Fuzz(func(t *testing.T, worker, owner, host string, exp int64) {
		c := tokenClaims{Worker: worker, Owner: owner, AllowHosts: []string{host, owner}, Expires: exp, Nonce: worker}
		want, err := json.Marshal(&c)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.appendJSON(nil); string(got) != string(want) {
			t.Errorf("encoded %s, want %s", got, want)
		}
	})
}

// BenchmarkCallToken is what the pool spends on every call attempt to mint
// its token and keep the call in flight.
func BenchmarkCallToken(b *testing.B) {
	c := newCallsWithKey([]byte("0123456789abcdef0123456789abcdef"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	call := egress.Call{Owner: "bob", Function: "add", Caller: "bob"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, nonce := c.begin(ctx, "worker_001", call)
			c.end(nonce)
		}
	})
}
