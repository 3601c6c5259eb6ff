package childproc

import (
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
)

// A child is confined by two layers: the seccomp filter it installs on
// itself (Harden), without which it refuses to run unless the operator
// allows it, and, where the system allows, new user, mount and network
// namespaces that Start puts it in. docs/RATIONALE.md, "Why namespaces
// under the seccomp filter?", says what each gives.

// unconfinedMark starts what Harden reports when it went on without the
// filter.
const unconfinedMark = "UNCONFINED"

// Unconfined reports whether a child's hardening report (what Harden
// returned) says it runs without its seccomp filter.
func Unconfined(hardening string) bool { return strings.Contains(hardening, unconfinedMark) }

// LogLayers logs which layers confine a payload's children, from one that
// started: at Info when the filter is installed, at Warn when it is not
// (the operator allowed it). Payloads call it once, at their first child.
func LogLayers(log *slog.Logger, payload string, p *Process, hardening string) {
	ns := "user, mount and network"
	if !p.Namespaced() {
		_, why := Namespaces()
		ns = "none (" + why + ")"
	}
	if Unconfined(hardening) {
		log.Warn(payload+" children run WITHOUT their seccomp filter (--allow-unconfined): function code is not confined",
			"hardening", hardening, "namespaces", ns)
		return
	}
	log.Info(payload+" children are confined", "seccomp", true, "hardening", hardening, "namespaces", ns)
}

// Whether children start in namespaces of their own is found by trying,
// once: the first Start asks for them; if the kernel refuses (no user
// namespaces, unprivileged ones turned off by a sysctl, a security module,
// a container's own seccomp profile) and the same start without them
// works, every later Start goes without. Probing by a real start, rather
// than by reading sysctls, covers every reason there is for a refusal.
const (
	namespacesUntried = iota
	namespacesInUse
	namespacesUnavailable
)

var namespaceLayer struct {
	state atomic.Int32
	mu    sync.Mutex
	why   string // why they are unavailable
}

// Namespaces reports whether children start in new user, mount and network
// namespaces: true once one has; false with the reason once a start in
// them failed and the same start without them worked (then none tries
// again), or off Linux; false and "" before any child started.
func Namespaces() (inUse bool, why string) {
	if !namespacesPossible {
		return false, "not Linux"
	}
	switch namespaceLayer.state.Load() {
	case namespacesInUse:
		return true, ""
	case namespacesUnavailable:
		namespaceLayer.mu.Lock()
		defer namespaceLayer.mu.Unlock()
		return false, namespaceLayer.why
	}
	return false, ""
}

// tryNamespaces reports whether the next Start should ask for namespaces.
func tryNamespaces() bool {
	return namespacesPossible && namespaceLayer.state.Load() != namespacesUnavailable
}

// namespacesWorked and namespacesRefused record what a Start found.
func namespacesWorked() { namespaceLayer.state.CompareAndSwap(namespacesUntried, namespacesInUse) }

func namespacesRefused(why string) {
	namespaceLayer.mu.Lock()
	defer namespaceLayer.mu.Unlock()
	namespaceLayer.why = why
	namespaceLayer.state.Store(namespacesUnavailable)
}
