package wquant

import (
	"os"

	"golang.org/x/sys/unix"
)

// adviseSequential tells the kernel that fh will be read from start to
// end (POSIX_FADV_SEQUENTIAL: a larger readahead for its reads of pages
// not yet in the page cache); on error it does nothing.
func adviseSequential(fh *os.File) {
	unix.Fadvise(int(fh.Fd()), 0, 0, unix.FADV_SEQUENTIAL)
}
