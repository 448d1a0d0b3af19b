package kvcache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// testCovariances returns covariances of the given shape with random
// moments, the queries' second moment left out of every third head, an
// attention profile (of differing lengths) in every other.
func testCovariances(layers, heads, d int) *Covariances {
	r := rand.New(rand.NewPCG(3, 4))
	vec := func(n int) []float32 {
		xs := make([]float32, n)
		for i := range xs {
			xs[i] = float32(r.NormFloat64())
		}
		return xs
	}
	c := &Covariances{Layers: make([][]HeadCovariance, layers), Tokens: 777}
	for l := range c.Layers {
		c.Layers[l] = make([]HeadCovariance, heads)
		for h := range c.Layers[l] {
			hc := HeadCovariance{RopeMean: vec(d), K: Moments{vec(d), vec(d * d)}, V: Moments{vec(d), vec(d * d)}}
			if (l*heads+h)%3 != 2 {
				hc.Q = vec(d * d)
			}
			if (l*heads+h)%2 == 0 {
				hc.Attn = vec(5 + l + h)
				for i, x := range hc.Attn {
					hc.Attn[i] = x * x
				}
			}
			c.Layers[l][h] = hc
		}
	}
	return c
}

func writeCov(t testing.TB, c *Covariances, source string) []byte {
	t.Helper()
	var b bytes.Buffer
	n, err := CovarianceFile{c, source}.WriteTo(&b)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(b.Len()) {
		t.Fatalf("WriteTo counted %d bytes, wrote %d", n, b.Len())
	}
	return b.Bytes()
}

// TestCovarianceFileRoundTrip: what is read is what was written, moment
// for moment (so the same transforms and the same fingerprint), with its
// source.
func TestCovarianceFileRoundTrip(t *testing.T) {
	for _, tt := range []struct{ layers, heads, d int }{{1, 1, 1}, {2, 3, 8}, {3, 2, 64}} {
		c := testCovariances(tt.layers, tt.heads, tt.d)
		f, err := ReadCovariances(bytes.NewReader(writeCov(t, c, "model abc; 4 windows")))
		if err != nil {
			t.Fatalf("%+v: %v", tt, err)
		}
		got, source := f.Cov, f.Source
		if source != "model abc; 4 windows" || got.Tokens != c.Tokens || !reflect.DeepEqual(got.Layers, c.Layers) {
			t.Errorf("%+v: read back %q, tokens %d, layers equal %v", tt, source, got.Tokens, reflect.DeepEqual(got.Layers, c.Layers))
		}
		if got.Fingerprint() != c.Fingerprint() {
			t.Errorf("%+v: fingerprint %x, written %x", tt, got.Fingerprint(), c.Fingerprint())
		}
	}
}

// TestCovarianceFileRefusesDamage: every flipped byte, every truncation
// and a byte appended are refused with ErrCovFile; so are moments that
// are not finite and headers out of bounds, before they allocate.
func TestCovarianceFileRefusesDamage(t *testing.T) {
	good := writeCov(t, testCovariances(2, 2, 4), "src")
	refused := func(what string, b []byte) {
		t.Helper()
		if _, err := ReadCovariances(bytes.NewReader(b)); !errors.Is(err, ErrCovFile) {
			t.Errorf("%s: err %v, want ErrCovFile", what, err)
		}
	}
	for i := range good {
		b := bytes.Clone(good)
		b[i] ^= 0x10
		refused("byte flipped", b)
	}
	for n := range len(good) {
		refused("cut short", good[:n])
	}
	refused("a byte appended", append(bytes.Clone(good), 0))

	nan := testCovariances(1, 1, 4)
	nan.Layers[0][0].V.Cov[5] = float32(math.NaN())
	refused("NaN", writeCov(t, nan, ""))
	for _, x := range []float64{-1, math.NaN(), math.Inf(1)} {
		neg := testCovariances(1, 1, 4)
		neg.Layers[0][0].Attn[2] = float32(x)
		refused("attention weight "+fmt.Sprint(x), writeCov(t, neg, ""))
	}
	// A profile claiming more ages than a profile may hold (its length
	// field after the header's 32 bytes, the flags and 60 floats of
	// moments), refused before it allocates.
	long := writeCov(t, testCovariances(1, 1, 4), "")
	at := 32 + 1 + 4*(4+4+16+4+16+16)
	if got := binary.LittleEndian.Uint32(long[at:]); got != 5 {
		t.Fatalf("the profile's length field reads %d, want 5", got)
	}
	binary.LittleEndian.PutUint32(long[at:], maxProfileAge+1)
	if _, err := ReadCovariances(bytes.NewReader(long)); !errors.Is(err, ErrCovFile) || !strings.Contains(err.Error(), "attention profile of") {
		t.Errorf("a profile of %d ages: err %v", maxProfileAge+1, err)
	}

	// A header claiming the most layers, heads and dimension, then
	// nothing: refused as cut short, having allocated one head at most.
	var b bytes.Buffer
	b.WriteString(covMagic)
	for _, v := range []uint32{0, maxPlanLayers, covMaxHeads, covMaxDim} {
		b.Write([]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)})
	}
	b.Write([]byte{1, 0, 0, 0, 0, 0, 0, 0})
	refused("huge header, no body", b.Bytes())
	for _, bad := range [][4]uint32{{0, 1, 1, 1}, {1, 0, 1, 1}, {1, 1, 0, 1}, {maxPlanLayers + 1, 1, 1, 1}, {1, covMaxHeads + 1, 1, 1}, {1, 1, covMaxDim + 1, 1}} {
		var b bytes.Buffer
		b.WriteString(covMagic)
		b.Write([]byte{0, 0, 0, 0})
		for _, v := range bad[:3] {
			b.Write([]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)})
		}
		b.Write([]byte{byte(bad[3]), 0, 0, 0, 0, 0, 0, 0})
		refused("header out of bounds", b.Bytes())
	}
}

// TestCovarianceFileWriteRefuses: shapes a file cannot hold are errors.
func TestCovarianceFileWriteRefuses(t *testing.T) {
	uneven := testCovariances(2, 2, 4)
	uneven.Layers[1] = uneven.Layers[1][:1]
	short := testCovariances(1, 1, 4)
	short.Layers[0][0].K.Cov = short.Layers[0][0].K.Cov[:3]
	for name, tt := range map[string]struct {
		c      *Covariances
		source string
	}{
		"nil":         {nil, ""},
		"no layers":   {&Covariances{}, ""},
		"uneven":      {uneven, ""},
		"short":       {short, ""},
		"long source": {testCovariances(1, 1, 4), string(make([]byte, covMaxSource+1))},
	} {
		if _, err := (CovarianceFile{tt.c, tt.source}).WriteTo(&bytes.Buffer{}); err == nil {
			t.Errorf("%s: written", name)
		}
	}
}

// FuzzReadCovariances: any input is read or refused, never a panic; what
// is read writes back to the same bytes.
func FuzzReadCovariances(f *testing.F) {
	f.Add(writeCov(f, testCovariances(1, 1, 2), "s"))
	f.Add(writeCov(f, testCovariances(2, 2, 4), ""))
	f.Add([]byte(covMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		f, err := ReadCovariances(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrCovFile) {
				t.Fatalf("error %v does not wrap ErrCovFile", err)
			}
			return
		}
		if again := writeCov(t, f.Cov, f.Source); !bytes.Equal(again, b) {
			t.Fatalf("read %d bytes, wrote back %d different ones", len(b), len(again))
		}
	})
}
