// Package puregopass lets a test step aside in the continuous
// integration's pure-Go pass (.ci/run: the build tag purego with -short)
// when it would only repeat the SIMD pass: its code runs no kernel that
// has an assembly twin (no dispatch of tensor, quant or kvcache to a
// pure-Go version), so both passes execute exactly the same statements.
// Tests that do reach a kernel run in both passes: that is what the
// pure-Go pass is for.
package puregopass

import "testing"

// Skip skips t in the pure-Go pass.
func Skip(t testing.TB) {
	t.Helper()
	if tagged && testing.Short() {
		t.Skip("no kernel with an assembly twin on this test's path: the SIMD pass runs the same code")
	}
}
