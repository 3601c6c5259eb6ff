//go:build linux && !amd64 && !arm64

package childproc

import (
	"fmt"
	"runtime"
)

// installSeccomp has filters for linux/amd64 and linux/arm64 only (see
// Caveats in doc.go).
func installSeccomp() error {
	return fmt.Errorf("no filter for %s", runtime.GOARCH)
}
