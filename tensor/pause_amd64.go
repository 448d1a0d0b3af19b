//go:build amd64 && !purego

package tensor

// spinPause is one iteration of a spin-wait (the PAUSE instruction).
//
//go:noescape
func spinPause()
