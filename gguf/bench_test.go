package gguf

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkOpen opens the fixture (a 32000-token vocabulary, 12 tensors),
// mapping it, decoding all metadata and closing it.
func BenchmarkOpen(b *testing.B) {
	readFixture(b)
	b.ReportAllocs()
	for b.Loop() {
		f, err := Open(fixturePath)
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

// BenchmarkOpenSample opens a small generated file, so the benchmark runs
// without the fixture.
func BenchmarkOpenSample(b *testing.B) {
	path := filepath.Join(b.TempDir(), "sample.gguf")
	if err := os.WriteFile(path, sampleFile(b), 0o644); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		f, err := Open(path)
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

// BenchmarkDecode compares the two decoding paths on the fixture in memory.
func BenchmarkDecode(b *testing.B) {
	data := readFixture(b)
	b.Run("bytes", func(b *testing.B) {
		b.SetBytes(fixtureDataOffset)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeBytes(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ReaderAt", func(b *testing.B) {
		b.SetBytes(fixtureDataOffset)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Decode(bytes.NewReader(data), int64(len(data))); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkWrite writes the fixture's metadata and tensors through Builder.
func BenchmarkWrite(b *testing.B) {
	f, err := DecodeBytes(readFixture(b))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(f.Size)
	b.ReportAllocs()
	for b.Loop() {
		rewrite(b, f)
	}
}
