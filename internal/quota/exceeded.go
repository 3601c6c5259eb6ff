package quota

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A Kind names one quota: what it counts and the flag of `taskworker quota
// set` that raises it.
type Kind struct {
	Name, Flag string
	Bytes      bool
}

// The kinds of quota.
var (
	Storage          = Kind{"storage", "--storage", true}
	Modules          = Kind{"modules", "--module-count", false}
	ModuleBytes      = Kind{"module bytes", "--modules", true}
	Calls            = Kind{"calls", "--calls", false}
	SandboxProcesses = Kind{"sandbox processes", "--sandbox-processes", false}
	Tasks            = Kind{"tasks", "--tasks", false}
)

// Exceeded is what a service answers when a request would take user over
// the quota of kind k: ResourceExhausted, naming the quota, its limit, the
// use now and what the request needs, and what to do.
func Exceeded(user string, k Kind, limit, use, need int64) error {
	f := func(n int64) string { return fmt.Sprint(n) }
	if k.Bytes {
		f = FormatBytes
	}
	return status.Errorf(codes.ResourceExhausted,
		"%s quota of %s exceeded: the limit is %s, %s in use, and this request needs %s more; free some, or ask an admin to raise it (taskworker quota set %s %s N)",
		k.Name, user, f(limit), f(use), f(need), user, k.Flag)
}

// FormatBytes writes n in the largest binary unit that keeps it readable:
// 10 GiB, 1.5 MiB, 512 B.
func FormatBytes(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	v, i := float64(n), 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 || v == float64(int64(v)) {
		return fmt.Sprintf("%d %s", int64(v), units[i])
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}
