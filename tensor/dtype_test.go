package tensor

import "testing"

func TestDTypeLayout(t *testing.T) {
	// Bits per weight published for the GGML formats (docs/ALGORITHMS.md §11 and
	// the ggml block structs).
	tests := []struct {
		t    DType
		name string
		bpw  float64
	}{
		{F32, "F32", 32}, {F16, "F16", 16}, {BF16, "BF16", 16},
		{Q8_0, "Q8_0", 8.5}, {Q4_0, "Q4_0", 4.5}, {Q4_1, "Q4_1", 5},
		{Q5_0, "Q5_0", 5.5}, {Q5_1, "Q5_1", 6}, {Q4_K, "Q4_K", 4.5},
		{Q5_K, "Q5_K", 5.5}, {Q6_K, "Q6_K", 6.5625}, {Q2_K, "Q2_K", 2.625},
		{Q3_K, "Q3_K", 3.4375}, {Q8_K, "Q8_K", 9.125},
	}
	for _, tt := range tests {
		if got := tt.t.String(); got != tt.name {
			t.Errorf("%d: String() = %q, want %q", uint32(tt.t), got, tt.name)
		}
		if got := tt.t.BitsPerWeight(); got != tt.bpw {
			t.Errorf("%s: BitsPerWeight() = %g, want %g", tt.name, got, tt.bpw)
		}
		p, err := ParseDType(tt.name)
		if err != nil || p != tt.t {
			t.Errorf("ParseDType(%q) = %v, %v", tt.name, p, err)
		}
	}
}

func TestRowBytes(t *testing.T) {
	tests := []struct {
		t       DType
		n       int64
		want    int64
		wantErr bool
	}{
		{Q8_0, 64, 68, false},
		{Q4_K, 512, 288, false},
		{F16, 3, 6, false},
		{Q8_0, 33, 0, true},
		{F32, -1, 0, true},
		{DType(4), 32, 0, true},
		{F64, 1 << 62, 0, true},
	}
	for _, tt := range tests {
		got, err := tt.t.RowBytes(tt.n)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("%v.RowBytes(%d) = %d, %v; want %d, err %v", tt.t, tt.n, got, err, tt.want, tt.wantErr)
		}
	}
}
