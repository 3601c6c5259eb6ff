//go:build linux && !amd64

package childproc

import (
	"fmt"
	"runtime"
)

// installSeccomp has a filter for linux/amd64 only (see Caveats in doc.go).
func installSeccomp() error {
	return fmt.Errorf("no filter for %s", runtime.GOARCH)
}
