//go:build !amd64 || purego

package tensor

// spinPause is one iteration of a spin-wait; without assembly it does
// nothing.
func spinPause() {}
