package serving_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/hivemind/taskworker/internal/serving"
)

func TestKinds(t *testing.T) {
	denied := serving.NewError(serving.KindDenied, "host not allowed")
	tests := []struct {
		name string
		err  error
		kind serving.Kind
		code codes.Code
	}{
		{"nil", nil, serving.KindUnknown, codes.OK},
		{"a sentinel", denied, serving.KindDenied, codes.PermissionDenied},
		{"a wrapped sentinel", fmt.Errorf("https://x: %w", denied), serving.KindDenied, codes.PermissionDenied},
		{"the first kind in the chain wins", fmt.Errorf("%w", fmt.Errorf("a: %w", serving.NewError(serving.KindInvalid, "bad"))), serving.KindInvalid, codes.InvalidArgument},
		{"a deadline", fmt.Errorf("get: %w", context.DeadlineExceeded), serving.KindTimeout, codes.DeadlineExceeded},
		{"a cancel", context.Canceled, serving.KindCanceled, codes.Canceled},
		{"a plain error", errors.New("boom"), serving.KindUnknown, codes.Unknown},
		{"crashed", serving.NewError(serving.KindCrashed, "x"), serving.KindCrashed, codes.Aborted},
		{"refused", serving.NewError(serving.KindRefused, "x"), serving.KindRefused, codes.FailedPrecondition},
		{"exhausted", serving.NewError(serving.KindExhausted, "x"), serving.KindExhausted, codes.ResourceExhausted},
		{"unavailable", serving.NewError(serving.KindUnavailable, "x"), serving.KindUnavailable, codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err != nil {
				if got := serving.KindOf(tt.err); got != tt.kind {
					t.Errorf("KindOf = %s, want %s", got, tt.kind)
				}
			}
			st := serving.GRPCStatus(tt.err)
			if st.Code() != tt.code || serving.GRPCCode(tt.err) != tt.code {
				t.Errorf("code %s, want %s", st.Code(), tt.code)
			}
			if tt.err != nil && st.Message() != tt.err.Error() {
				t.Errorf("message %q, want the error's %q", st.Message(), tt.err.Error())
			}
		})
	}
	if c := serving.Kind(200).Code(); c != codes.Unknown {
		t.Errorf("an unlisted kind maps to %s, want Unknown", c)
	}
}
