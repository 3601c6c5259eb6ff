package taskworker_test

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker"
)

// A function reads a secret it is granted (`taskworker secret grant
// API_KEY --function lookup`) during its call. Called directly rather
// than through the pool, it has no call and so no secrets.
func ExampleSecret() {
	lookup := func(ctx context.Context, id string) (string, error) {
		key, err := taskworker.Secret(ctx, "API_KEY")
		if err != nil {
			return "", err // a status: its code reaches the caller
		}
		return fmt.Sprintf("looked up %s with a key of %d bytes", id, len(key)), nil
	}
	_, err := lookup(context.Background(), "42")
	fmt.Println(status.Code(err))
	// Output: FailedPrecondition
}

// A function calls an API through the pool, with a key it never sees: the
// pool puts the secret in the header on the way out, toward the hosts its
// grant names (`taskworker secret grant API_KEY --function weather --host
// https://api.example.com`), and redacts it from the answer. The function
// is deployed with `--allow-host https://api.example.com`.
func ExampleFetch() {
	weather := func(ctx context.Context, city string) (string, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", "https://api.example.com/v1/weather?city="+city, nil)
		if err != nil {
			return "", err
		}
		req.Header.Set("Authorization", "Bearer {{secret:API_KEY}}")
		resp, err := taskworker.Fetch(ctx, req)
		if err != nil {
			return "", err
		}
		body, err := io.ReadAll(resp.Body)
		return string(body), err
	}
	_ = weather // registered with w.Function("weather", weather)
}
