package quant

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/turbomem/turbomem/half"
)

// fp16Field is the byte offset of an fp16 parameter inside a code, and
// whether a negative value is legitimate there (a KIVI min, a q4_0
// scale) or corrupt (norms, radii, scales).
type fp16Field struct {
	off    int
	signed bool
}

// fuzzTarget is one quantizer under FuzzDecode. channels marks the KIVI
// per-channel block format, whose code size depends on the token count.
type fuzzTarget struct {
	q        Quantizer
	channels bool
	fields   func(size int) []fp16Field
}

func everyN(start, stride, end int, signed bool) []fp16Field {
	var f []fp16Field
	for off := start; off+2 <= end; off += stride {
		f = append(f, fp16Field{off, signed})
	}
	return f
}

// fuzzTargets builds every quantizer of the package at small dimensions.
func fuzzTargets(tb testing.TB) []fuzzTarget {
	must := func(q Quantizer, err error) Quantizer {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
		return q
	}
	scaleAt := func(offs ...int) func(int) []fp16Field {
		return func(int) []fp16Field {
			var f []fp16Field
			for _, o := range offs {
				f = append(f, fp16Field{o, false})
			}
			return f
		}
	}
	var ts []fuzzTarget
	for b := 1; b <= 4; b++ {
		ts = append(ts, fuzzTarget{q: must(NewTurboMSE(16, b, Options{Seed: 1})), fields: scaleAt(0)})
	}
	ts = append(ts, fuzzTarget{q: must(NewTurboMSE(24, 3, Options{Seed: 1, Correction: CorrectProjection})), fields: scaleAt(0)})
	ts = append(ts, fuzzTarget{q: must(NewTurboProd(16, 1, Options{Seed: 1})), fields: scaleAt(0)})
	for b := 2; b <= 3; b++ {
		p := must(NewTurboProd(16, b, Options{Seed: 1})).(*TurboProd)
		ts = append(ts, fuzzTarget{q: p, fields: scaleAt(0, p.mseBytes())})
	}
	ts = append(ts, fuzzTarget{q: must(NewQJL(16, 32, 1)), fields: scaleAt(0)})
	for _, pc := range []struct {
		d    int
		bits []int
	}{{16, nil}, {32, nil}, {24, []int{3, 3, 2}}} {
		p := must(NewPolar(pc.d, pc.bits, Options{Seed: 1})).(*Polar)
		ts = append(ts, fuzzTarget{q: p, fields: func(int) []fp16Field { return everyN(0, 2, 2*p.nb, false) }})
	}
	for _, kc := range []struct{ d, bits, group int }{{32, 2, 16}, {12, 3, 4}} {
		k := must(NewKIVI(kc.d, kc.bits, kc.group)).(*KIVI)
		ts = append(ts, fuzzTarget{q: k, fields: func(size int) []fp16Field {
			return append(everyN(0, k.groupBytes(), size, false), everyN(2, k.groupBytes(), size, true)...)
		}})
	}
	kc := must(NewKIVI(8, 2, 8)).(*KIVI)
	ts = append(ts, fuzzTarget{q: kc, channels: true, fields: func(int) []fp16Field {
		return append(everyN(0, 4, 4*kc.d, false), everyN(2, 4, 4*kc.d, true)...)
	}})
	ts = append(ts, fuzzTarget{q: must(NewQ8_0(64)), fields: func(size int) []fp16Field { return everyN(0, 34, size, false) }})
	ts = append(ts, fuzzTarget{q: must(NewQ4_0(64)), fields: func(size int) []fp16Field { return everyN(0, 18, size, true) }})
	ts = append(ts, fuzzTarget{q: must(NewQ4_0H(128, true)), fields: func(size int) []fp16Field { return everyN(0, 18, size, true) }})
	return ts
}

// codeSize returns the code size for target t given the fuzz input (for
// channel blocks, 1..4 tokens chosen by the input's length).
func (t fuzzTarget) codeSize(n int) (size, tokens int) {
	if t.channels {
		tokens = 1 + n%4
		return t.q.(*KIVI).ChannelBytes(tokens), tokens
	}
	return t.q.Bytes(), 1
}

// FuzzDecode feeds arbitrary bytes (cut or zero-padded to the code size)
// to every quantizer's Decode and Score. Neither may panic; Decode must
// fail with ErrCorrupt exactly when an fp16 parameter is NaN or infinite,
// or negative where the encoder never writes a negative value; otherwise
// it must return finite values, and the scorer must agree with the
// decoded vector. Check must give Decode's error, without decoding.
func FuzzDecode(f *testing.F) {
	targets := fuzzTargets(f)
	r := rand.New(rand.NewPCG(1, 2))
	for i, t := range targets {
		size, tokens := t.codeSize(0)
		x := randomVectors(r, tokens, t.q.Dim(), 1)
		code := make([]byte, size)
		var err error
		if t.channels {
			err = t.q.(*KIVI).EncodeChannels(code, x, tokens)
		} else {
			err = t.q.Encode(code, x)
		}
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), code)
		f.Add(uint8(i), make([]byte, size))
		ff := make([]byte, size)
		for j := range ff {
			ff[j] = 0xff
		}
		f.Add(uint8(i), ff)
	}
	f.Fuzz(func(tt *testing.T, sel uint8, data []byte) {
		t := targets[int(sel)%len(targets)]
		size, tokens := t.codeSize(len(data))
		code := make([]byte, size)
		copy(code, data)
		d := t.q.Dim()

		corrupt := false
		for _, fl := range t.fields(size) {
			h := half.F16(binary.LittleEndian.Uint16(code[fl.off:]))
			v := half.F16ToF32(h)
			if h&0x7c00 == 0x7c00 || (!fl.signed && v < 0) {
				corrupt = true
			}
		}
		dec := make([]float32, tokens*d)
		var err error
		if t.channels {
			err = t.q.(*KIVI).DecodeChannels(dec, code, tokens)
		} else {
			err = t.q.Decode(dec, code)
		}
		if corrupt != (err != nil) {
			tt.Fatalf("%s: code % x: corrupt field %v, Decode error %v", t.q.Name(), code, corrupt, err)
		}
		if err != nil && !errors.Is(err, ErrCorrupt) {
			tt.Fatalf("%s: error %v does not wrap ErrCorrupt", t.q.Name(), err)
		}
		var cerr error
		if t.channels {
			cerr = t.q.(*KIVI).CheckChannels(code, tokens)
		} else {
			cerr = t.q.Check(code)
		}
		if (cerr == nil) != (err == nil) || err != nil && cerr.Error() != err.Error() {
			tt.Fatalf("%s: code % x: Check %v, Decode %v", t.q.Name(), code, cerr, err)
		}

		q := make([]float32, d)
		for j := range q {
			q[j] = float32(j%5) - 1.5
		}
		got := make([]float32, tokens)
		if t.channels {
			sc, err := t.q.(*KIVI).PrepareChannels(q)
			if err != nil {
				tt.Fatal(err)
			}
			sc.Score(got, code)
		} else {
			sc, err := t.q.Prepare(q)
			if err != nil {
				tt.Fatal(err)
			}
			sc.Score(got, code)
		}
		if corrupt {
			return
		}
		for tk := range tokens {
			x := dec[tk*d : (tk+1)*d]
			var want, mag float64
			for j, v := range x {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					tt.Fatalf("%s: code % x: decoded[%d] = %g", t.q.Name(), code, tk*d+j, v)
				}
				want += float64(q[j]) * float64(v)
				mag += math.Abs(float64(q[j]) * float64(v))
			}
			// As in checkScorer: summation order and rotating q instead of
			// x̃ differ by a few ulps of the sum of magnitudes; the floor
			// covers fp16 subnormal scales, where mag is tiny.
			if math.Abs(float64(got[tk])-want) > 1e-5*mag+1e-6 {
				tt.Fatalf("%s: code % x: score %g, <q, decode> %g", t.q.Name(), code, got[tk], want)
			}
		}
	})
}
