//go:build linux

package wquant

import (
	"io/fs"
	"os"
	"syscall"
)

// statID returns the identity of the file at path (its manifest left
// empty).
func statID(path string) (fileID, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	return infoID(fi)
}

// infoID returns the identity of the file fi describes (its manifest
// left empty).
func infoID(fi fs.FileInfo) (fileID, error) {
	if fi == nil {
		return fileID{}, errNoFileID
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, errNoFileID
	}
	return fileID{dev: int64(st.Dev), ino: int64(st.Ino), size: st.Size, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}, nil
}
