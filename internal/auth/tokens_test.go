package auth

import (
	"strings"
	"testing"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

func TestCheckReserved(t *testing.T) {
	tests := []struct {
		user  string
		role  v1.Role
		force bool
		err   string
	}{
		{"alice", v1.Role_ROLE_USER, false, ""},
		{"alice", v1.Role_ROLE_ADMIN, false, ""},
		{"alice", v1.Role_ROLE_WORKER, false, ""},
		{"admin", v1.Role_ROLE_ADMIN, false, ""},
		{"admin", v1.Role_ROLE_USER, false, `user "admin" is reserved for the pool's admin token`},
		{"Admin", v1.Role_ROLE_USER, false, `user "Admin" is reserved`},
		{"ADMIN", v1.Role_ROLE_WORKER, false, "with role worker"},
		{"admin", v1.Role_ROLE_USER, true, ""},
		{"worker", v1.Role_ROLE_WORKER, false, ""},
		{"worker", v1.Role_ROLE_USER, false, `user "worker" is reserved for the pool's worker token`},
		{"worker", v1.Role_ROLE_ADMIN, false, "choose another user name, or force it"},
		{"worker", v1.Role_ROLE_ADMIN, true, ""},
		{"workers", v1.Role_ROLE_USER, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.user+"/"+RoleName(tt.role), func(t *testing.T) {
			err := CheckReserved(tt.user, tt.role, tt.force)
			if tt.err == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("got %v; want an error containing %q", err, tt.err)
			}
		})
	}
}

func TestTokenID(t *testing.T) {
	tok := NewToken()
	id := ID(Hash(tok))
	if err := ValidateID(id); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(tok, id) {
		t.Errorf("the id %s is part of the token", id)
	}
	bads := []string{"", "abc", id + "0", "zzzzzzzzzzzz", "ABCDEF012345", tok}
	if up := strings.ToUpper(id); up != id { // an id of digits only has no upper case
		bads = append(bads, up)
	}
	for _, bad := range bads {
		if ValidateID(bad) == nil {
			t.Errorf("ValidateID(%q) passed", bad)
		}
	}
}
