package kvcache

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/half"
	"github.com/turbomem/turbomem/tensor"
)

// exportShape is the shape the export tests use: grouped queries, a
// rotary embedding (centred keys turn with it), head dim 64.
func exportShape(t testing.TB) Shape {
	return Shape{QHeads: 4, KVHeads: 2, HeadDim: 64, Rope: testRope(t, 64, 64, false)}
}

// exportTokens returns n tokens' keys and values for sh: a fixed offset
// per head plus noise, so that centring and outlier choices matter.
func exportTokens(sh Shape, n int, seed uint64) (ks, vs [][]float32) {
	r := rand.New(rand.NewPCG(seed, 7))
	w := sh.KVHeads * sh.HeadDim
	off := make([]float32, w)
	for i := range off {
		off[i] = float32(r.NormFloat64())
	}
	for range n {
		k, v := make([]float32, w), make([]float32, w)
		for i := range k {
			k[i] = off[i] + float32(r.NormFloat64())
			v[i] = float32(r.NormFloat64()) * float32(1+i%7)
		}
		ks, vs = append(ks, k), append(vs, v)
	}
	return ks, vs
}

func newExportCache(t testing.TB, spec Spec, sh Shape) *Compressed {
	t.Helper()
	c, err := newCompressed(withCov(t, spec, sh), 3, sh)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func appendAll(t testing.TB, c Cache, ks, vs [][]float32) {
	t.Helper()
	for i := range ks {
		if err := c.Append(ks[i], vs[i]); err != nil {
			t.Fatal(err)
		}
	}
}

// sameAttention checks that a and b attend bit for bit alike for a few
// queries.
func sameAttention(t *testing.T, a, b Cache, sh Shape, seed uint64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 9))
	q := make([]float32, sh.QHeads*sh.HeadDim)
	oa, ob := make([]float32, len(q)), make([]float32, len(q))
	for range 3 {
		for i := range q {
			q[i] = float32(r.NormFloat64())
		}
		a.Attend(oa, q, 0.125)
		b.Attend(ob, q, 0.125)
		for i := range oa {
			if math.Float32bits(oa[i]) != math.Float32bits(ob[i]) {
				t.Fatalf("output %d: %g restored, %g original", i, ob[i], oa[i])
			}
		}
	}
	if a.Bytes() != b.Bytes() || a.Len() != b.Len() {
		t.Fatalf("restored cache holds %d tokens in %d bytes, the original %d in %d", b.Len(), b.Bytes(), a.Len(), a.Bytes())
	}
}

// TestExportRoundTrip: for every compressed format, tiered ones too, a
// cache rebuilt from exported codes (in prefix-cache blocks of 64 tokens:
// the first block's rows appended, the next blocks' codes imported, the
// last block's rows appended, as a session refilled from blocks is)
// attends bit for bit as the cache that exported them, holds the same
// bytes, and stays so as both take more tokens. The blocks come from
// ExportRows, whose bytes equal Export's wherever the cache still holds
// the codes (every block of a format that is not tiered; a tiered one
// drops the high-rate codes of the tokens it has re-coded, and Export
// then says so).
func TestExportRoundTrip(t *testing.T) {
	sh := exportShape(t)
	for _, name := range append(FormatNames(), tieredTestFormats...) {
		f, err := ParseFormat(name)
		if err != nil {
			t.Fatal(err)
		}
		if !f.compressed() || f.Check(sh.HeadDim, true) != nil || f.checkTier(DefaultWindow) != nil {
			continue
		}
		t.Run(name, func(t *testing.T) {
			spec := specFor(t, name, 0)
			ks, vs := exportTokens(sh, 320, 1)
			dropped := 0
			export := func(c *Compressed, from, to int) []byte {
				t.Helper()
				b, err := c.ExportRows("m", from, to, fp16Rows(ks[from:to]), fp16Rows(vs[from:to]))
				if err != nil {
					t.Fatal(err)
				}
				held, err := c.Export("m", from, to)
				switch {
				case err == nil && !bytes.Equal(b, held):
					t.Fatalf("ExportRows of [%d, %d) differs from Export", from, to)
				case err != nil && (!f.tiered() || !strings.Contains(err.Error(), "rows")):
					t.Fatalf("Export of [%d, %d): %v", from, to, err)
				case err != nil:
					dropped++
				}
				return b
			}
			x := newExportCache(t, spec, sh)
			appendAll(t, x, ks[:256], vs[:256])
			if x.CompressedLen() != 192 {
				t.Fatalf("%d compressed of 256, want 192", x.CompressedLen())
			}
			for from := 0; from < 192; from += 64 { // every block, the first one's codes dropped longest
				export(x, from, from+64)
			}
			y := newExportCache(t, spec, sh)
			appendAll(t, y, ks[:64], vs[:64])
			for from := 64; from < 192; from += 64 {
				if err := y.Import("m", export(x, from, from+64)); err != nil {
					t.Fatal(err)
				}
			}
			appendAll(t, y, ks[192:256], vs[192:256])
			sameAttention(t, x, y, sh, 1)
			appendAll(t, x, ks[256:], vs[256:])
			appendAll(t, y, ks[256:], vs[256:])
			sameAttention(t, x, y, sh, 2)

			// The whole compressed part at once into an empty cache.
			z := newExportCache(t, spec, sh)
			if err := z.Import("m", export(x, 0, x.CompressedLen())); err != nil {
				t.Fatal(err)
			}
			appendAll(t, z, ks[x.CompressedLen():], vs[x.CompressedLen():])
			sameAttention(t, x, z, sh, 3)
			if f.tiered() && dropped == 0 {
				t.Error("Export wrote every block: the rows were never needed")
			}
		})
	}
}

// fp16Rows returns rows rounded to fp16 and laid end to end, as a
// caller that keeps a cache's rows (a prefix cache) holds them.
func fp16Rows(rows [][]float32) []uint16 {
	var out []uint16
	for _, r := range rows {
		for _, x := range r {
			out = append(out, uint16(half.F32ToF16(x)))
		}
	}
	return out
}

// TestExportSize: a block of turbo3.5 codes is its tokens' code bytes
// and a header, against fp16 rows of the same tokens: about 4.5x smaller
// at head dim 64 (3.5 bits + the fp16 scales, against 16).
func TestExportSize(t *testing.T) {
	sh := exportShape(t)
	x := newExportCache(t, specFor(t, "turbo3.5", 0), sh)
	ks, vs := exportTokens(sh, 256, 1)
	appendAll(t, x, ks, vs)
	b, err := x.Export("m", 128, 192)
	if err != nil {
		t.Fatal(err)
	}
	codes := 64 * 2 * sh.KVHeads * f16TurboBytes(t, sh.HeadDim)
	if len(b) < codes || len(b) > codes+256 {
		t.Errorf("export of 64 tokens is %d bytes, want the %d bytes of codes and a header under 256", len(b), codes)
	}
	if rows := 64 * 2 * sh.KVHeads * sh.HeadDim * 2; float64(rows)/float64(len(b)) < 4 {
		t.Errorf("fp16 rows %d bytes against an export of %d: under 4x", rows, len(b))
	}
}

func f16TurboBytes(t *testing.T, d int) int {
	f, err := ParseFormat("turbo3.5")
	if err != nil {
		t.Fatal(err)
	}
	return f.c.tokenBytes(d, true)
}

// TestImportErrors: every mismatch and every damage is an error that says
// what is wrong, and leaves the cache as it was.
func TestImportErrors(t *testing.T) {
	sh := exportShape(t)
	spec := specFor(t, "turbo3.5", 0)
	ks, vs := exportTokens(sh, 192, 1)
	x := prefilled(t, spec, sh, ks, vs)
	good, err := x.Export("m", 64, 128)
	if err != nil {
		t.Fatal(err)
	}
	other := newExportCache(t, spec, sh) // another sequence: another calibration
	ko, vo := exportTokens(sh, 192, 2)
	appendAll(t, other, ko, vo)
	empty, err := x.Export("m", 128, 128) // imports nothing
	if err != nil {
		t.Fatal(err)
	}
	otherCal, err := other.Export("m", 64, 128)
	if err != nil {
		t.Fatal(err)
	}
	withSum := func(b []byte) []byte { // b's body with a fresh checksum
		b = append([]byte(nil), b[:len(b)-4]...)
		return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	}
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)/2] ^= 1
	version := append([]byte(nil), good...)
	version[4] = 9
	longer := withSum(append(append([]byte(nil), good[:len(good)-4]...), 0, 0, 0, 0, 0))
	// Valid checksums over codes no encoder writes: the last head's
	// values (the last section) with its first token's scale made NaN,
	// then negative.
	section := 64 * f16TurboBytes(t, sh.HeadDim)
	scaled := func(h uint16) []byte {
		b := append([]byte(nil), good...)
		binary.LittleEndian.PutUint16(b[len(b)-4-section:], h)
		return withSum(b)
	}
	// The same in the first block, which calibrates an empty cache: the
	// refused import leaves it uncalibrated.
	firstBlock, err := x.Export("m", 0, 64)
	if err != nil {
		t.Fatal(err)
	}
	first := func(h uint16) []byte {
		b := append([]byte(nil), firstBlock...)
		binary.LittleEndian.PutUint16(b[len(b)-4-section:], h)
		return withSum(b)
	}
	for _, c := range []struct {
		name  string
		into  func() *Compressed
		tag   string
		data  []byte
		error string
	}{
		{"tag", func() *Compressed { return prefilled(t, spec, sh, ks[:64], vs[:64]) }, "other", good, "exported for"},
		{"format", func() *Compressed { return prefilled(t, specFor(t, "turbo2.5", 0), sh, ks[:64], vs[:64]) }, "m", good, "format turbo3.5/turbo3.5"},
		{"head dim", func() *Compressed {
			s := Shape{QHeads: 4, KVHeads: 2, HeadDim: 128, Rope: testRope(t, 128, 128, false)}
			k2, v2 := exportTokens(s, 64, 1)
			return prefilled(t, spec, s, k2, v2)
		}, "m", good, "head dim 64"},
		{"rope", func() *Compressed {
			s := sh
			s.Rope = testRope(t, 64, 32, false)
			return prefilled(t, spec, s, ks[:64], vs[:64])
		}, "m", good, "rotary embedding"},
		{"position", func() *Compressed { return prefilled(t, spec, sh, ks[:63], vs[:63]) }, "m", good, "exactly the tokens before"},
		{"empty range", func() *Compressed { return prefilled(t, spec, sh, ks[:128], vs[:128]) }, "m", withSum(empty), ""},
		{"another sequence", func() *Compressed {
			c := prefilled(t, spec, sh, ks[:64], vs[:64])
			b, _ := x.Export("m", 64, 128)
			if err := c.Import("m", b); err != nil {
				t.Fatal(err)
			}
			return c
		}, "m", otherCal, "exactly the tokens before"},
		{"corrupted", func() *Compressed { return prefilled(t, spec, sh, ks[:64], vs[:64]) }, "m", flipped, "checksum"},
		{"truncated", func() *Compressed { return prefilled(t, spec, sh, ks[:64], vs[:64]) }, "m", good[:len(good)-9], "checksum"},
		{"version", func() *Compressed { return prefilled(t, spec, sh, ks[:64], vs[:64]) }, "m", version, "version 9"},
		{"not an export", func() *Compressed { return prefilled(t, spec, sh, ks[:64], vs[:64]) }, "m", []byte("{}"), "TMKV"},
		{"trailing bytes", func() *Compressed { return prefilled(t, spec, sh, ks[:64], vs[:64]) }, "m", longer, "past the codes"},
		{"NaN scale", func() *Compressed { return prefilled(t, spec, sh, ks[:64], vs[:64]) }, "m", scaled(0x7e00), "head 1 values: token 0"},
		{"negative scale", func() *Compressed { return prefilled(t, spec, sh, ks[:64], vs[:64]) }, "m", scaled(0xbc00), "corrupt code"},
		{"NaN scale, uncalibrated", func() *Compressed { return newExportCache(t, spec, sh) }, "m", first(0x7e00), "corrupt code"},
	} {
		t.Run(c.name, func(t *testing.T) {
			y := c.into()
			n, bytes := y.Len(), y.Bytes()
			err := y.Import(c.tag, c.data)
			if c.error == "" {
				if err != nil {
					t.Fatalf("import of an empty range: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.error) {
				t.Fatalf("error %v, want one saying %q", err, c.error)
			}
			if y.Len() != n || y.Bytes() != bytes {
				t.Errorf("a refused import changed the cache: %d tokens in %d bytes, was %d in %d", y.Len(), y.Bytes(), n, bytes)
			}
		})
	}
	// Export refuses what is still in the window and bad tags.
	if _, err := x.Export("m", 64, 192); err == nil || !strings.Contains(err.Error(), "window") {
		t.Errorf("export of window tokens: %v", err)
	}
	if _, err := x.Export(strings.Repeat("x", 300), 0, 64); err == nil {
		t.Error("export with a 300-byte tag: no error")
	}
}

// TestImportCalibrationMismatch: a cache calibrated on its own first
// tokens refuses codes whose calibration came from other first tokens.
func TestImportCalibrationMismatch(t *testing.T) {
	sh := exportShape(t)
	spec := specFor(t, "turbo3.5", 0)
	ks, vs := exportTokens(sh, 192, 1)
	ko, vo := exportTokens(sh, 192, 2)
	x, other := newExportCache(t, spec, sh), newExportCache(t, spec, sh)
	appendAll(t, x, ks, vs)
	appendAll(t, other, ko, vo)
	y := newExportCache(t, spec, sh)
	b, _ := x.Export("m", 0, 64)
	if err := y.Import("m", b); err != nil {
		t.Fatal(err)
	}
	bad, _ := other.Export("m", 64, 128)
	n := y.Bytes()
	if err := y.Import("m", bad); err == nil || !strings.Contains(err.Error(), "calibration differs") {
		t.Fatalf("import of another sequence's codes: %v, want a calibration mismatch", err)
	}
	if y.Bytes() != n {
		t.Error("the refused import changed the cache")
	}
}

func prefilled(t testing.TB, spec Spec, sh Shape, ks, vs [][]float32) *Compressed {
	t.Helper()
	c := newExportCache(t, spec, sh)
	appendAll(t, c, ks, vs)
	return c
}

// FuzzImport feeds Import mutated exports with a valid checksum (a
// damaged checksum is refused before anything is read), of every
// compressed format (sel picks it): it must return an error that leaves
// the cache as it was, or import codes that attend to finite values;
// never panic. The seeds are each format's exports of a first, a middle
// and an empty range; the corpus under testdata/fuzz/FuzzImport adds
// codes that no encoder writes (NaN, infinite, negative scales and fp16
// rows), each with a valid checksum.
func FuzzImport(f *testing.F) {
	sh := exportShape(f)
	ks, vs := exportTokens(sh, 192, 1)
	var specs []Spec
	for _, name := range FormatNames() {
		if ff, _ := ParseFormat(name); !ff.compressed() || ff.Check(sh.HeadDim, true) != nil {
			continue
		}
		x := prefilled(f, specFor(f, name, 0), sh, ks, vs)
		for _, r := range [][2]int{{0, 64}, {64, 128}, {64, 64}} {
			b, err := x.Export("m", r[0], r[1])
			if err != nil {
				f.Fatal(err)
			}
			f.Add(uint8(len(specs)), b[:len(b)-4], r[0] == 0)
		}
		specs = append(specs, specFor(f, name, 0))
	}
	q := make([]float32, sh.QHeads*sh.HeadDim)
	out := make([]float32, len(q))
	for i := range q {
		q[i] = 0.1
	}
	f.Fuzz(func(t *testing.T, sel uint8, body []byte, empty bool) {
		spec := specs[int(sel)%len(specs)]
		data := binary.LittleEndian.AppendUint32(append([]byte(nil), body...), crc32.Checksum(body, castagnoli))
		var y *Compressed
		if empty {
			y = newExportCache(t, spec, sh)
		} else {
			y = prefilled(t, spec, sh, ks[:64], vs[:64])
		}
		n, bytes := y.Len(), y.Bytes()
		if err := y.Import("m", data); err != nil {
			if y.Len() != n || y.Bytes() != bytes {
				t.Fatalf("a refused import (%v) changed the cache", err)
			}
			return
		}
		y.Attend(out, q, 0.125)
		for i, v := range out {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("imported codes attend to %g at %d", v, i)
			}
		}
	})
}

// BenchmarkExportRows times a prefix cache's export of one 64-token block
// of a tiered cache (8 KV heads of 128, tcq3.5>2~2.5, 1024 tokens held):
// the first block, whose high-rate codes the stores have dropped (encoded
// again from the rows), and the last whole one, still held (copied), on
// one thread and on every CPU.
func BenchmarkExportRows(b *testing.B) {
	sh := Shape{QHeads: 32, KVHeads: 8, HeadDim: 128, Rope: testRope(b, 128, 128, false)}
	ks, vs := exportTokens(sh, 1024, 1)
	c := newExportCache(b, specFor(b, "tcq3.5>2~2.5", 0), sh)
	appendAll(b, c, ks, vs)
	for _, threads := range []int{1, 0} {
		p := tensor.NewPool(threads)
		UsePool(c, p)
		for _, from := range []int{0, c.CompressedLen() - 64} {
			k, v := fp16Rows(ks[from:from+64]), fp16Rows(vs[from:from+64])
			b.Run(fmt.Sprintf("from=%d/threads=%d", from, p.Threads()), func(b *testing.B) {
				for b.Loop() {
					if _, err := c.ExportRows("m", from, from+64, k, v); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		p.Close()
	}
}
