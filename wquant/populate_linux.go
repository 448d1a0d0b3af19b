package wquant

import (
	"os"
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

// adviseSequential tells the kernel that fh will be read from start to
// end (POSIX_FADV_SEQUENTIAL: a larger readahead for its reads of pages
// not yet in the page cache); on error it does nothing.
func adviseSequential(fh *os.File) {
	unix.Fadvise(int(fh.Fd()), 0, 0, unix.FADV_SEQUENTIAL)
}
