package wquant

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// populate maps the pages of b, a part of a file's read-only mapping,
// into the process in one call (MADV_POPULATE_READ, Linux 5.14 and
// later) instead of a page fault for every few of them; on error (an
// older kernel, memory that is not a mapping) it does nothing, and the
// reads fault the pages in as usual. b is not memory of Go's heap.
func populate(b []byte) {
	if len(b) == 0 {
		return
	}
	start := uintptr(unsafe.Pointer(&b[0]))
	off := start % uintptr(unix.Getpagesize()) // madvise takes whole pages
	unix.Syscall(unix.SYS_MADVISE, start-off, uintptr(len(b))+off, unix.MADV_POPULATE_READ)
	runtime.KeepAlive(b)
}
