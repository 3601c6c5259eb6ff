package main

import (
	"errors"
	"fmt"
	"net"
	"syscall"
)

// errAddrInUse is what probeListen returns for an address another process
// serves on.
var errAddrInUse = errors.New("address already in use")

// probeListen checks that addr can be listened on, before a command writes
// anything (tokens, etcd data) that a failed start would leave behind. The
// port may still be taken between the probe and the real listen; then the
// server's own error says so.
func probeListen(addr string) error {
	l, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%s: %w", addr, errAddrInUse)
	}
	if err != nil {
		return err
	}
	return l.Close()
}
