package quota

import "time"

// Limits are one user's quotas. A zero field means no limit, except
// KeepVersions, where zero means the default retention (DefaultKeepVersions).
type Limits struct {
	// StorageBytes bounds the bytes of all the user's file versions.
	StorageBytes int64
	// Modules and ModuleBytes bound the user's deployed modules: how many
	// distinct modules, and their bytes.
	Modules     int64
	ModuleBytes int64
	// Calls bounds the user's calls running at once through each pool
	// replica (each counts its own).
	Calls int64
	// SandboxProcesses bounds the sandbox child processes the user's calls
	// hold at once on one worker.
	SandboxProcesses int64
	// Tasks bounds the user's tasks queued or running.
	Tasks int64
	// KeepVersions is how many versions of each file are kept (0: the
	// default); KeepFor keeps, in addition, versions younger than it.
	KeepVersions int64
	KeepFor      time.Duration
}

// DefaultKeepVersions is how many versions of a file are kept when nothing
// else is set.
const DefaultKeepVersions = 10
