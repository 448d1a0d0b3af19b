package tensor

import "math"

// Exp returns e^x in float32 within 2 ulp over the range where the result
// is a normal float32 (Cephes expf: x = n·ln 2 + r with |r| ≤ ln 2/2,
// Cody–Waite reduction in two parts, a degree-6 polynomial for e^r, 2^n
// put in the exponent). x is clamped to [−87.3, 88.3]: below, the result
// is 1.2e-38 (as good as 0 next to any term of order 1); above, 2.0e38. It
// is several times cheaper than math.Exp, which softmax and SiLU would
// otherwise call once per element.
func Exp(x float32) float32 {
	// Every product is converted to float32 on its own, so that no
	// compiler fuses it with the addition after it: the SwiGLU assembly
	// does each operation apart and gives the same bits.
	x = min(max(x, -87.3), 88.3)
	n := float32(math.Floor(float64(float32(x*1.44269504088896341) + 0.5))) // round(x·log₂e)
	r := float32(x-float32(n*0.693359375)) + float32(n*2.12194440e-4)
	p := float32(1.9875691500e-4)
	p = float32(p*r) + 1.3981999507e-3
	p = float32(p*r) + 8.3334519073e-3
	p = float32(p*r) + 4.1665795894e-2
	p = float32(p*r) + 1.6666665459e-1
	p = float32(p*r) + 5.0000001201e-1
	e := float32(float32(float32(p*r)*r)+r) + 1
	return e * math.Float32frombits(uint32(int32(n)+127)<<23)
}

// swiGLUGo is SwiGLU in Go: the twin of the assembly, which does the
// same operations in the same order (the conversions to float32 keep the
// compiler from fusing a multiply and an add, which would round once
// where the assembly rounds twice).
func swiGLUGo(g, u []float32) {
	u = u[:len(g)]
	for i, z := range g {
		g[i] = float32(z/(1+Exp(-z))) * u[i]
	}
}
