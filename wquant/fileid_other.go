//go:build !linux

package wquant

// statID reports that the checked cache is not kept here.
func statID(string) (fileID, error) { return fileID{}, errNoFileID }
