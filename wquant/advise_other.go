//go:build !linux

package wquant

import "os"

// adviseSequential does nothing here.
func adviseSequential(*os.File) {}
