//go:build !linux

package wquant

import "os"

// populate does nothing here: the reads fault the pages in.
func populate([]byte) {}

// adviseSequential does nothing here.
func adviseSequential(*os.File) {}
