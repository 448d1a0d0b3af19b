package gguf

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"github.com/turbomem/turbomem/tensor"
)

// FuzzDecode checks, for any input, that both decoding paths agree, that
// failures are FormatErrors, that a decoded File satisfies the invariants
// the reader promises, and that Builder accepts every File the reader
// accepts and writes it back to an equal File.
func FuzzDecode(f *testing.F) {
	// The fixture enters with its vocabulary cut short (miniFixture): the
	// same fields, but small enough for the fuzzer to mutate and minimize
	// quickly (at 1.7 MB the whole file stalls it).
	if _, err := os.Stat(fixturePath); err == nil {
		f.Add(miniFixture(f))
	}
	f.Add(sampleFile(f))
	var buf bytes.Buffer
	NewBuilder().WriteTo(&buf)
	f.Add(buf.Bytes())
	f.Add([]byte{})
	f.Add([]byte("GGUF"))
	f.Add((&raw{b: []byte("GGUF")}).u32(2).u64(0).u64(1).kv("a", TypeUint8).u8(7).b)
	f.Add(header(0, 1).kv("general.alignment", TypeUint32).u32(1).b)
	f.Add(header(1, 1).kv("general.alignment", TypeUint32).u32(8).tensor("t", tensor.Q4_0, 0, 32, 1).pad(8).zeros(18).b)
	f.Add(header(3, 0).tensor("s", tensor.F32, 0).tensor("e", tensor.Q4_K, 0, 0, 7).tensor("e2", tensor.F16, 32, 4, 0).pad(32).zeros(32).b)
	f.Add(header(2, 0).tensor("a", tensor.F32, 0, 16).tensor("b", tensor.F32, 32, 16).pad(32).zeros(96).b)
	f.Add(header(0, 1).kv("a", TypeArray).u32(uint32(TypeArray)).u64(2).
		u32(uint32(TypeString)).u64(1).str("x").u32(uint32(TypeBool)).u64(2).u8(0).u8(1).b)
	f.Add(header(0, 1).kv("a", TypeArray).u32(uint32(TypeString)).u64(1 << 40).zeros(64).b)

	f.Fuzz(func(t *testing.T, b []byte) {
		f1, err1 := DecodeBytes(b)
		f2, err2 := Decode(bytes.NewReader(b), int64(len(b)))
		if (err1 == nil) != (err2 == nil) || (err1 != nil && err1.Error() != err2.Error()) {
			t.Fatalf("DecodeBytes: %v\nDecode: %v", err1, err2)
		}
		if err1 != nil {
			var fe *FormatError
			if !errors.As(err1, &fe) || !errors.Is(err1, ErrMalformed) {
				t.Fatalf("%v (%T) is not a FormatError", err1, err1)
			}
			if fe.Offset < 0 || fe.Offset > int64(len(b)) {
				t.Fatalf("error offset %d outside the file of %d bytes: %v", fe.Offset, len(b), err1)
			}
			return
		}
		checkSame(t, f1, f2)
		checkInvariants(t, f1)

		out := rewrite(t, f1)
		g, err := DecodeBytes(out)
		if err != nil {
			t.Fatalf("rewritten file does not decode: %v", err)
		}
		checkSameContent(t, f1, g)
		if again := rewrite(t, g); !bytes.Equal(again, out) {
			t.Fatal("rewriting a rewritten file changed it")
		}
	})
}

// checkInvariants checks what the reader promises about a File it returns.
func checkInvariants(t *testing.T, f *File) {
	t.Helper()
	if f.Alignment < 1 || f.Alignment > MaxAlignment || f.Alignment&(f.Alignment-1) != 0 || f.DataOffset%f.Alignment != 0 {
		t.Fatalf("alignment %d, data offset %d", f.Alignment, f.DataOffset)
	}
	if len(f.keys) != len(f.KV) || len(f.tensors) != len(f.Tensors) {
		t.Fatalf("indexes hold %d keys and %d tensors, want %d and %d", len(f.keys), len(f.tensors), len(f.KV), len(f.Tensors))
	}
	for i, ti := range f.Tensors {
		if len(ti.Shape) > MaxDims || ti.Name == "" || len(ti.Name) > MaxTensorNameLen || !ti.Type.Known() {
			t.Fatalf("tensor %d: %+v", i, ti)
		}
		size, err := tensorSize(ti.Shape, ti.Type)
		if err != nil || size != ti.Size {
			t.Fatalf("tensor %d: size %d, recomputed %d, %v", i, ti.Size, size, err)
		}
		if ti.Offset < f.DataOffset || (ti.Offset-f.DataOffset)%f.Alignment != 0 || ti.Offset+ti.Size > f.Size {
			t.Fatalf("tensor %d at %d, %d bytes: data section at %d, file %d bytes", i, ti.Offset, ti.Size, f.DataOffset, f.Size)
		}
		for j, tj := range f.Tensors[:i] {
			if ti.Size > 0 && tj.Size > 0 && ti.Offset < tj.Offset+tj.Size && tj.Offset < ti.Offset+ti.Size {
				t.Fatalf("tensors %d and %d overlap", j, i)
			}
		}
		if d, err := f.ReadTensor(ti); err != nil || int64(len(d)) != ti.Size {
			t.Fatalf("tensor %d: %d bytes, %v", i, len(d), err)
		}
	}
}
