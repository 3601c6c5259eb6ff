//go:build !linux

package shardstore

import "os"

// syncfsFunc is nil where there is no syncfs(2): writes fsync one by one.
func syncfsFunc(*os.File) func() error { return nil }
