package pool

import (
	"fmt"

	"github.com/hivemind/taskworker/internal/egress"
	"github.com/hivemind/taskworker/internal/secrets"
)

// startSecrets serves SecretService, KeyService (rotating the master keys
// and rewrapping the data keys of secrets and of file versions) and
// EgressService.
func (s *Server) startSecrets() error {
	store := secrets.New(s.cli, s.cfg.Prefix, s.keys)
	var err error
	if s.egress, err = egress.New(egress.Config{AllowNets: s.cfg.EgressAllowNets}); err != nil {
		return fmt.Errorf("egress: %w", err)
	}
	secrets.NewServer(store, checkUser, s.log).Register(s.grpc)
	secrets.NewKeyServer(s.keys, map[string]secrets.Rewrapper{"secrets": store, "files": s.files,
		"key record": keyRecord{cli: s.cli, prefix: s.cfg.Prefix, ring: s.keys}}, s.log).Register(s.grpc)
	egress.NewServer(s.egress, store, checkUser, s.log).Register(s.grpc)
	return nil
}
