//go:build !linux

package wquant

import "io/fs"

// statID reports that the checked cache is not kept here.
func statID(string) (fileID, error) { return fileID{}, errNoFileID }

// infoID reports that the checked cache is not kept here.
func infoID(fs.FileInfo) (fileID, error) { return fileID{}, errNoFileID }
