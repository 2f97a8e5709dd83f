//go:build !linux

package sockio

const supported = false

func (s *IO) read(fd uintptr) bool  { panic("sockio: not supported") }
func (s *IO) write(fd uintptr) bool { panic("sockio: not supported") }
func (s *IO) peek(fd uintptr)       { panic("sockio: not supported") }
