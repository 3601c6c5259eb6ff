package auth_test

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/metadata"

	"github.com/hivemind/taskworker/internal/auth"
)

func TestTokenRoundTrip(t *testing.T) {
	tok := auth.NewToken()
	if err := auth.Validate(tok); err != nil {
		t.Fatalf("Validate(NewToken()) = %v", err)
	}
	if auth.NewToken() == tok {
		t.Fatal("two tokens are equal")
	}
	if len(auth.Hash(tok)) != 64 || auth.Hash(tok) == auth.Hash(auth.NewToken()) {
		t.Fatal("Hash is not a SHA-256 hex digest")
	}
}

func TestFromIncoming(t *testing.T) {
	tok := auth.NewToken()
	tests := []struct {
		name   string
		header []string
		want   string
		err    error
	}{
		{"good", []string{"Bearer " + tok}, tok, nil},
		{"lowercase scheme", []string{"bearer " + tok}, tok, nil},
		{"missing", nil, "", auth.ErrNoToken},
		{"not a token", []string{"Bearer hunter2"}, "", auth.ErrMalformedToken},
		{"no scheme", []string{tok}, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			md := metadata.MD{}
			if tt.header != nil {
				md.Set(auth.HeaderAuthorization, tt.header...)
			}
			got, err := auth.FromIncoming(metadata.NewIncomingContext(context.Background(), md))
			if tt.want != "" {
				if err != nil || got != tt.want {
					t.Fatalf("got %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			if tt.err != nil && !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
		})
	}
}
