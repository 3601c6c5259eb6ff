package serving

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

// NotCommittedReason is the errdetails.ErrorInfo reason on the status of a
// write the server knows it did not carry out: it failed before its commit
// was sent to the control plane, so retrying it cannot apply it twice.
const NotCommittedReason = "NOT_COMMITTED"

// ErrorDomain is the errdetails.ErrorInfo domain of TaskWorker's reasons.
const ErrorDomain = "taskworker.hivemind"

// NotCommitted marks err, a gRPC status error, as the failure of a write
// that did not take effect. Any other error, and nil, is returned as is:
// only a server that knows the write never reached its commit may say so.
func NotCommitted(err error) error {
	st, ok := status.FromError(err)
	if !ok || err == nil || IsNotCommitted(err) {
		return err
	}
	d, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: NotCommittedReason, Domain: ErrorDomain})
	if derr != nil {
		return err
	}
	return d.Err()
}

// IsNotCommitted reports whether err says its write did not take effect
// (see NotCommitted). Whatever its code, such a failure is definite: a
// client may treat the write as never made.
func IsNotCommitted(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetReason() == NotCommittedReason && ei.GetDomain() == ErrorDomain {
			return true
		}
	}
	return false
}
