package auth

import (
	"fmt"
	"strings"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// IDLen is the length of a token's id: the first hex digits of its hash.
// 48 bits name a token among any number an operator will make, and give
// nothing to authenticate with: the token is 256 random bits.
const IDLen = 12

// ID returns the id of the token whose Hash is hash: what lists show and
// revocation takes, never the secret.
func ID(hash string) string {
	if len(hash) < IDLen {
		return hash
	}
	return hash[:IDLen]
}

// ValidateID checks an id as an operator typed it: IDLen lowercase hex
// digits.
func ValidateID(id string) error {
	if len(id) != IDLen || strings.Trim(id, "0123456789abcdef") != "" {
		return fmt.Errorf("token id %q: an id is %d lowercase hex digits, as 'taskworker token ls' shows it", id, IDLen)
	}
	return nil
}

// The user names of the pool's bootstrap tokens. Files, functions and
// deploys are keyed by user name, so a token for one of these names acts on
// what that user owns: each name is reserved to its role (ReservedRole).
const (
	AdminUser = "admin"
	JoinUser  = "worker"
)

// ReservedRole returns the role a reserved user name belongs to. Names
// are compared without case, so "Admin" is as reserved as "admin".
func ReservedRole(user string) (v1.Role, bool) {
	switch strings.ToLower(user) {
	case AdminUser:
		return v1.Role_ROLE_ADMIN, true
	case JoinUser:
		return v1.Role_ROLE_WORKER, true
	}
	return v1.Role_ROLE_UNSPECIFIED, false
}

// CheckReserved refuses a token for a reserved user name with another role
// than the name's own, unless force is set: "--user admin --role user"
// would make a user token that reads and writes the admin's files, which
// is never what a slip of the keyboard means. Roles are never inferred from
// names; this only stops a name being given by accident.
func CheckReserved(user string, role v1.Role, force bool) error {
	want, ok := ReservedRole(user)
	if !ok || role == want || force {
		return nil
	}
	return fmt.Errorf("user %q is reserved for the pool's %s token: a token with role %s for it would act on that user's files and functions; choose another user name, or force it if that is what you mean",
		user, RoleName(want), RoleName(role))
}
