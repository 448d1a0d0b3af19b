package wquant

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// checkedRacyMargin is how long before a check began a file must have
// last changed for the check to be remembered: a change in the same tick
// of the kernel's coarse clock (or of a file system that keeps seconds)
// can leave ctime as it was, so a file changed just before or during its
// check is hashed again at the next open instead ("racily clean" in
// git).
const checkedRacyMargin = 2 * time.Second

// fileID is what the checked cache compares: the file's identity and its
// manifest's SHA-256 (hex).
type fileID struct {
	dev, ino, size, mtime, ctime int64
	manifest                     string
}

// String is the record the cache keeps.
func (id fileID) String() string {
	return fmt.Sprintf("dev %d ino %d size %d mtime %d ctime %d manifest %s", id.dev, id.ino, id.size, id.mtime, id.ctime, id.manifest)
}

// checkedHeader is the first line of a cache entry.
const checkedHeader = "turbomem checked v1\n"

// entry returns the path of id's file's entry in dir: one per device and
// inode, so that a changed file's entry is replaced rather than left.
func (id fileID) entry(dir string) string {
	h := sha256.Sum256(fmt.Appendf(nil, "%d %d", id.dev, id.ino))
	return filepath.Join(dir, hex.EncodeToString(h[:16]))
}

// encodeChecked returns id's cache entry: the header, the record and the
// record's SHA-256, a line each.
func encodeChecked(id fileID) []byte {
	rec := id.String() + "\n"
	sum := sha256.Sum256([]byte(checkedHeader + rec))
	return []byte(checkedHeader + rec + hex.EncodeToString(sum[:]) + "\n")
}

// isChecked reports whether dir holds an entry for exactly id whose
// checksum matches: a missing, damaged or other entry is false.
func isChecked(dir string, id fileID) bool {
	b, err := os.ReadFile(id.entry(dir))
	return err == nil && bytes.Equal(b, encodeChecked(id))
}

// rememberChecked records in dir that id's file passed its complete
// check, which began at began, unless the file changed less than margin
// (checkedRacyMargin) before that. The entry is written to a temporary
// file and renamed into place, so that a reader sees all of it or none.
func rememberChecked(dir string, id fileID, began time.Time, margin time.Duration) error {
	if last := max(id.mtime, id.ctime); began.UnixNano()-last < int64(margin) {
		return nil // racily clean: hashed again next time
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".entry-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(encodeChecked(id))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), id.entry(dir))
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

// errNoFileID is statID's error where the system does not say a file's
// identity.
var errNoFileID = errors.New("wquant: no file identity on this system")

// DefaultCheckedCache returns the checked cache's directory
// (OpenOptions.CheckedCache; see the package documentation) in the
// user's cache directory (os.UserCacheDir): turbomem/checked.
func DefaultCheckedCache() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "turbomem", "checked"), nil
}
