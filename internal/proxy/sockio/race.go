//go:build race

package sockio

import (
	"runtime"
	"unsafe"
)

// The race detector does not see what a raw system call reads or
// writes; these tell it, as the syscall package's Read and Write do.
func raceWrite(p []byte) { runtime.RaceWriteRange(unsafe.Pointer(&p[0]), len(p)) }
func raceRead(p []byte)  { runtime.RaceReadRange(unsafe.Pointer(&p[0]), len(p)) }
