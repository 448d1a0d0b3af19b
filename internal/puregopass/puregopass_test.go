package puregopass

import "testing"

// TestSkip: Skip skips exactly in the pure-Go pass (tag and -short), and
// the SIMD pass runs whatever calls it.
func TestSkip(t *testing.T) {
	ran := false
	t.Run("inner", func(t *testing.T) {
		Skip(t)
		ran = true
	})
	if want := !(tagged && testing.Short()); ran != want {
		t.Errorf("ran %v, want %v (tag %v, short %v)", ran, want, tagged, testing.Short())
	}
}
