package quant

import "math"

// kltScaleScratch is an encoder's room for fitting the scale byte to the
// codes: a code's levels per component, and a second code.
type kltScaleScratch struct {
	l    []float32
	code []byte
}

func (k *KLT) newScaleScratch() *kltScaleScratch {
	return &kltScaleScratch{l: make([]float32, k.d), code: make([]byte, k.bytes)}
}

// codeLevels writes σᵢ·c, each coded component's level in code (the
// decoded vector in the transformed basis less the offset, at ρ̂ = 1),
// into l; 0 for the components without bits.
func (k *KLT) codeLevels(l []float32, code []byte) {
	clear(l)
	idx := code[1:]
	if k.tcq != nil {
		var buf tcqEntryBuf
		e := k.entryRoom(&buf)
		k.entries(e, idx)
		for j, f := range k.fields {
			l[f.comp] = k.levels[e[j]]
		}
		return
	}
	for j := range k.fields {
		f := &k.fields[j]
		l[f.comp] = k.levels[f.base+f.index(idx)]
	}
}

// scaleFit holds the sums that give the error of y coded with the levels
// l at a scale ρ, E(ρ) = Σ wᵢ·(yᵢ − ρ·lᵢ)² = c − 2ρ·a + ρ²·b over the
// coded components, w the encoder's weights (KLTParams.Weight; 1 if
// unset). The components without bits decode to the offset at any scale
// and are left out.
type scaleFit struct{ a, b, c float64 }

func (k *KLT) scaleFit(y, l []float32) scaleFit {
	var s scaleFit
	for i, b := range k.bits {
		if b == 0 {
			continue
		}
		w := 1.0
		if k.weight != nil {
			w = float64(k.weight[i])
		}
		yi, li := float64(y[i]), float64(l[i])
		s.a += w * yi * li
		s.b += w * li * li
		s.c += w * yi * yi
	}
	return s
}

// err returns E(ρ̂(e)).
func (s scaleFit) err(e byte) float64 {
	r := kltScale(e)
	return s.c - 2*r*s.a + r*r*s.b
}

// best returns the scale byte in [1, 255] of least E and its E: E is a
// parabola in ρ with its minimum at ρ* = a/b and ρ̂ increases with e, so
// it is one of the two bytes around ρ* (the byte 1 when ρ* ≤ 0).
func (s scaleFit) best() (byte, float64) {
	if !(s.b > 0) || !(s.a > 0) {
		return 1, s.err(1)
	}
	x := kltScaleSteps*math.Log2(s.a/s.b) + kltScaleBias
	lo, hi := clampByte(math.Floor(x)), clampByte(math.Floor(x)+1)
	if el, eh := s.err(lo), s.err(hi); eh < el {
		return hi, eh
	}
	return lo, s.err(lo)
}

// clampByte returns e as a scale byte of a non-zero vector, in [1, 255].
func clampByte(e float64) byte { return byte(math.Max(1, math.Min(255, e))) }

// refit sets code's scale byte to the best one for its indices (the
// least-squares fit of y by the code's levels, rounded to the byte grid)
// and returns the error.
func (k *KLT) refit(code []byte, y []float32, sc *kltScaleScratch) float64 {
	k.codeLevels(sc.l, code)
	e, err := k.scaleFit(y, sc.l).best()
	code[0] = e
	return err
}

// fitScale improves code, the code of y at the scale byte e₀ of y's
// RMS, by the scale: the indices are chosen for ρ̂(e₀), which is not the
// scale that codes the vector best (a vector of a few large components
// wants a wider codebook than its RMS gives, clipping less, a flat one a
// narrower one), and ρ̂ is not the least-squares scale for the indices
// chosen (Lloyd–Max and TCQ levels reconstruct shrunk, by an amount that
// varies from vector to vector). So each start byte is followed by the
// least-squares byte for its indices (refit); starting from e₀ + 1, e₀ +
// 2, … while the error falls, else from e₀ − 1, e₀ − 2, …, the code of
// least error is kept. Only the encoder changes: a code is read as
// before.
func (k *KLT) fitScale(code []byte, y []float32, sc *kltScaleScratch) {
	e0 := int(code[0])
	best := k.refit(code, y, sc)
	for _, dir := range []int{1, -1} {
		moved := false
		for e := e0 + dir; e >= 1 && e <= 255; e += dir {
			k.encodeAt(sc.code, y, byte(e))
			err := k.refit(sc.code, y, sc)
			if !(err < best) {
				break
			}
			best, moved = err, true
			copy(code, sc.code)
		}
		if moved {
			return
		}
	}
}
