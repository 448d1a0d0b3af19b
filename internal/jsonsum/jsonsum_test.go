package jsonsum

import (
	"errors"
	"strings"
	"testing"
)

type file struct {
	Version  int       `json:"version"`
	Name     string    `json:"name"`
	Loss     []float64 `json:"kl"`
	Checksum string    `json:"checksum"`
}

// TestSumReference: the checksum of a value, against Python's
//
//	d = {"version": 1, "name": "plan", "kl": [0.5, 0.25, 3], "checksum": ""}
//	hashlib.sha256(json.dumps(d, separators=(",", ":")).encode()).hexdigest()
//
// so files written before this package (kvcache's and wquant's plans
// computed the same sum themselves) still read.
func TestSumReference(t *testing.T) {
	f := file{Version: 1, Name: "plan", Loss: []float64{0.5, 0.25, 3}, Checksum: "left alone"}
	sum, err := Sum(&f, &f.Checksum)
	if err != nil {
		t.Fatal(err)
	}
	if want := "b0d3c7a3045392583fba5d3ef845054dba2fb2f55447a8543df4afbb2cc45b50"; sum != want {
		t.Errorf("Sum %s, want %s", sum, want)
	}
	if f.Checksum != "left alone" {
		t.Errorf("Sum changed the field to %q", f.Checksum)
	}
}

func TestRoundTripAndRefusals(t *testing.T) {
	f := file{Version: 1, Name: "plan", Loss: []float64{0.5, 0.25, 3}}
	b, err := Marshal(&f, &f.Checksum)
	if err != nil {
		t.Fatal(err)
	}
	good := string(b)
	if !strings.HasSuffix(good, "}\n") || !strings.Contains(good, "\n  \"name\": \"plan\"") {
		t.Errorf("not indented JSON ending in a newline: %q", good)
	}
	var g file
	if err := Decode(strings.NewReader(good), len(good), &g); err != nil {
		t.Fatal(err)
	}
	if err := Check(&g, &g.Checksum); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, file string
		max        int
		decode     string // Decode's error, or "" when Check must refuse it
	}{
		{"edited", strings.Replace(good, "0.25", "0.26", 1), 1000, ""},
		{"checksum edited", strings.Replace(good, `"checksum": "`, `"checksum": "0`, 1), 1000, ""},
		{"checksum emptied", strings.Replace(good, g.Checksum, "", 1), 1000, ""},
		{"unknown field", strings.Replace(good, "{", `{"extra": 1,`, 1), 1000, "unknown field"},
		{"data after", good + "{}", 1000, "data after"},
		{"garbage after", good + "x", 1000, "data after"},
		{"too large", good, len(good) - 1, "larger than"},
		{"truncated", good[:len(good)/2], 1000, "unexpected EOF"},
		{"empty", "", 1000, "EOF"},
	} {
		var h file
		err := Decode(strings.NewReader(tt.file), tt.max, &h)
		if tt.decode != "" {
			if err == nil || !strings.Contains(err.Error(), tt.decode) {
				t.Errorf("%s: Decode: %v, want %q", tt.name, err, tt.decode)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: Decode: %v", tt.name, err)
		} else if err := Check(&h, &h.Checksum); !errors.Is(err, ErrMismatch) {
			t.Errorf("%s: Check: %v, want ErrMismatch", tt.name, err)
		}
	}
	if _, err := Sum(func() {}, new(string)); err == nil {
		t.Error("Sum of a value JSON cannot encode: no error")
	}
}

func TestFormatRead(t *testing.T) {
	format := Format{Name: "test", Version: 1, MaxBytes: 1000}
	write := func(version int, edit func(string) string) string {
		f := file{Version: version, Name: "plan", Loss: []float64{0.5}}
		b, err := Marshal(&f, &f.Checksum)
		if err != nil {
			t.Fatal(err)
		}
		return edit(string(b))
	}
	same := func(s string) string { return s }
	for _, tt := range []struct {
		name, file, want string
	}{
		{"good", write(1, same), ""},
		{"not JSON", "hello", "not a test file: "},
		{"version", write(2, same), "version 2, want 1"},
		{"edited", write(1, func(s string) string { return strings.Replace(s, "0.5", "0.6", 1) }), ErrMismatch.Error()},
		{"too large", write(1, func(s string) string { return s + strings.Repeat(" ", 1000) }), "larger than 1000 bytes"},
	} {
		var f file
		err := format.Read(strings.NewReader(tt.file), &f, &f.Version, &f.Checksum)
		if tt.want == "" && (err != nil || f.Name != "plan") || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
}
