//go:build !linux

package cpdial

import "syscall"

// setUserTimeout does nothing where TCP_USER_TIMEOUT does not exist: the
// keepalive probes (KeepaliveCount of them) close a dead connection.
func setUserTimeout(_, _ string, _ syscall.RawConn) error { return nil }
