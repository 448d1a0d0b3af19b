package wquant

import (
	"errors"
	"github.com/turbomem/turbomem/model"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCheckedEntry: an entry is found for exactly the identity it was
// written for; a file changed within the racy margin before its check is
// not remembered; a damaged entry is not believed.
func TestCheckedEntry(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "checked")
	id := fileID{dev: 2049, ino: 1234567, size: 24 << 20, mtime: 1_700_000_000_123_456_789, ctime: 1_700_000_001_000_000_001, manifest: strings.Repeat("ab", 32)}
	began := time.Unix(0, id.ctime).Add(checkedRacyMargin - 1)
	if err := rememberChecked(dir, id, began, checkedRacyMargin); err != nil || isChecked(dir, id) {
		t.Fatalf("changed %v before its check: remembered %v (%v), want not", checkedRacyMargin-1, isChecked(dir, id), err)
	}
	began = time.Unix(0, id.ctime).Add(checkedRacyMargin)
	if err := rememberChecked(dir, id, began, checkedRacyMargin); err != nil || !isChecked(dir, id) {
		t.Fatalf("changed %v before its check: remembered %v (%v), want so", checkedRacyMargin, isChecked(dir, id), err)
	}
	for name, edit := range map[string]func(*fileID){
		"size": func(x *fileID) { x.size++ }, "mtime": func(x *fileID) { x.mtime++ }, "ctime": func(x *fileID) { x.ctime++ },
		"manifest": func(x *fileID) { x.manifest = strings.Repeat("ac", 32) }, "inode": func(x *fileID) { x.ino++ }, "device": func(x *fileID) { x.dev++ },
	} {
		other := id
		edit(&other)
		if isChecked(dir, other) {
			t.Errorf("another %s: found checked", name)
		}
	}
	entry := id.entry(dir)
	good, err := os.ReadFile(entry)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, len(checkedHeader) + 5, len(good) - 3} {
		b := append([]byte(nil), good...)
		b[i] ^= 1
		if err := os.WriteFile(entry, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if isChecked(dir, id) {
			t.Errorf("entry with byte %d flipped: believed", i)
		}
	}
	if err := os.WriteFile(entry, good[:len(good)-1], 0o600); err != nil {
		t.Fatal(err)
	}
	if isChecked(dir, id) {
		t.Error("truncated entry: believed")
	}
	if names, _ := filepath.Glob(filepath.Join(dir, ".entry-*")); len(names) != 0 {
		t.Errorf("temporary files left: %q", names)
	}
}

// TestOpenModelCheckedCache: with OpenOptions.CheckedCache a file whose
// lazy check passed is remembered and its next open skips the check
// (Checked reports nil at once); a byte flipped through the file system
// afterwards changes the file's identity, and the next open refuses it
// naming the tensor; --verify=full ignores the cache. A remembered
// identity is trusted as documented: an entry forged for an altered file
// (as bit rot under the file system would leave it) lets it load.
func TestOpenModelCheckedCache(t *testing.T) {
	if _, err := statID(os.Args[0]); errors.Is(err, errNoFileID) {
		t.Skip("no file identity on this system")
	}
	path := sealed(t)
	dir := filepath.Join(t.TempDir(), "checked")
	open := func(mode string) ([]float32, error) {
		t.Helper()
		checked := make(chan error, 1)
		mod, err := OpenModel(path, model.Options{Threads: 2}, OpenOptions{Verify: mode, CheckedCache: dir, racyMargin: time.Nanosecond,
			Checked: func(err error) { checked <- err }})
		if err != nil {
			return nil, err
		}
		s, err := mod.NewSession(nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		logits, err := s.Forward([]int32{1, 2, 3}, false)
		if mode == "lazy" {
			if cerr := <-checked; !errors.Is(cerr, err) && !(cerr != nil && err != nil) {
				t.Errorf("Checked reported %v, the Forward %v", cerr, err)
			}
		}
		mod.Close()
		return logits, err
	}
	entries := func() int {
		names, _ := filepath.Glob(filepath.Join(dir, "*"))
		return len(names)
	}
	// Written just now: within the racy margin, not remembered.
	done := make(chan error, 1)
	mod, err := OpenModel(path, model.Options{Threads: 2}, OpenOptions{Verify: "lazy", CheckedCache: dir, Checked: func(err error) { done <- err }})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mod.Close()
	if entries() != 0 {
		t.Fatalf("a file written %v before its check is remembered", checkedRacyMargin)
	}
	if logits, err := open("lazy"); err != nil || len(logits) == 0 || entries() != 1 {
		t.Fatalf("first lazy open: %d logits, %v, %d entries; want logits and one entry", len(logits), err, entries())
	}
	id, err := statID(path)
	if err != nil {
		t.Fatal(err)
	}
	id.manifest, _ = openGGUF(t, path).String(keySelf)
	if !isChecked(dir, id) {
		t.Fatal("the intact file is not remembered")
	}
	if logits, err := open("lazy"); err != nil || len(logits) == 0 {
		t.Fatalf("second lazy open (remembered): %d logits, %v", len(logits), err)
	}

	// A byte flipped through the file system.
	f := openGGUF(t, path)
	ti := f.Tensors[len(f.Tensors)/2]
	time.Sleep(20 * time.Millisecond) // past the kernel clock's tick of the file's last change
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	off := ti.Offset + ti.Size/3
	if _, err := fh.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x04
	if _, err := fh.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	want := "tensor " + ti.Name + ":"
	for _, mode := range []string{"lazy", "full"} {
		if logits, err := open(mode); logits != nil || !errors.Is(err, ErrAltered) || !strings.Contains(err.Error(), want) {
			t.Errorf("flipped byte, --verify=%s with the cache: %d logits, %v; want an error naming %q", mode, len(logits), err, want)
		}
	}
	altered, err := statID(path)
	if err != nil {
		t.Fatal(err)
	}
	altered.manifest = id.manifest
	if altered == id {
		// Only where the file system keeps times coarser than the 20 ms
		// slept: what the 2 s racy margin (set aside here) is for.
		t.Skipf("the file's identity %v did not change with a write 20 ms on", id)
	}
	if isChecked(dir, altered) {
		t.Fatalf("the altered file's identity %v (was %v) is remembered", altered, id)
	}

	// An entry forged for the altered file: trusted by lazy, not by full.
	if err := rememberChecked(dir, altered, time.Now(), 0); err != nil {
		t.Fatal(err)
	}
	if logits, err := open("lazy"); err != nil || len(logits) == 0 {
		t.Errorf("forged entry, --verify=lazy: %d logits, %v; want it trusted", len(logits), err)
	}
	if logits, err := open("full"); logits != nil || !strings.Contains(fmtErr(err), want) {
		t.Errorf("forged entry, --verify=full: %d logits, %v; want an error naming %q", len(logits), err, want)
	}
}

// fmtErr is err's message, "" for nil.
func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestOpenedFileID: the identity the checked cache compares is the
// opened file's, as the open found it (infoID of gguf.File.Info): the
// path's own (statID) while the path names it, and still the opened
// file's once another file is renamed over the path.
func TestOpenedFileID(t *testing.T) {
	if _, err := statID(os.Args[0]); errors.Is(err, errNoFileID) {
		t.Skip("no file identity on this system")
	}
	path := sealed(t)
	f := openGGUF(t, path)
	opened, err := infoID(f.Info())
	if err != nil {
		t.Fatal(err)
	}
	if now, err := statID(path); err != nil || now != opened {
		t.Fatalf("statID(path) = %v, %v; the opened file's identity is %v", now, err, opened)
	}
	other := writeBytes(t, readBytes(t, path))
	if err := os.Rename(other, path); err != nil {
		t.Fatal(err)
	}
	now, err := statID(path)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := infoID(f.Info()); again != opened || now.ino == opened.ino {
		t.Errorf("another file renamed over the path: the opened identity %v (was %v), the path's %v", again, opened, now)
	}
	if _, err := infoID(nil); !errors.Is(err, errNoFileID) {
		t.Errorf("infoID(nil): %v, want errNoFileID", err)
	}
}
