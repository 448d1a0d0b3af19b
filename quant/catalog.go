package quant

import (
	"fmt"
	"math"
)

// Standard returns the quantizers that reports compare at dimension d:
// for each integer rate b in rates, TurboMSE (plain and with the
// projection correction) and TurboProd; for each rate k+0.5, TurboQuant
// with d/4 outlier channels at k+1 bits and the rest at k (the first d/4
// channels: for isotropic test vectors any choice is equivalent). The
// fixed-rate methods follow whatever the rates: PolarQuant [4,2,2,2],
// KIVI 2-bit in groups of 32, and llama.cpp's q4_0 and q8_0 (those need d
// a multiple of 16 and 32; they are left out otherwise).
func Standard(d int, rates []float64, seed uint64) ([]Quantizer, error) {
	var qs []Quantizer
	o := Options{Seed: seed}
	for _, r := range rates {
		switch {
		case r == math.Trunc(r) && r >= 1 && r <= 8:
			b := int(r)
			plain, err := NewTurboMSE(d, b, o)
			if err != nil {
				return nil, err
			}
			oc := o
			oc.Correction = CorrectProjection
			corrected, err := NewTurboMSE(d, b, oc)
			if err != nil {
				return nil, err
			}
			qs = append(qs, plain, corrected)
			if d%8 == 0 {
				prod, err := NewTurboProd(d, b, o)
				if err != nil {
					return nil, err
				}
				qs = append(qs, prod)
			}
		case r-math.Trunc(r) == 0.5 && r > 1 && r < 8:
			k := int(r)
			outliers := make([]int, d/4)
			for i := range outliers {
				outliers[i] = i
			}
			s, err := NewTurboSplit(d, outliers, k+1, k, false, o)
			if err != nil {
				return nil, err
			}
			qs = append(qs, s)
		default:
			return nil, fmt.Errorf("quant: rate %g: want an integer 1..8 or k+0.5 for 1 ≤ k < 8", r)
		}
	}
	if d%16 == 0 {
		p, err := NewPolar(d, nil, o)
		if err != nil {
			return nil, err
		}
		qs = append(qs, p)
	}
	if d%32 == 0 {
		k, err := NewKIVI(d, 2, 32)
		if err != nil {
			return nil, err
		}
		q4, err := NewQ4_0(d)
		if err != nil {
			return nil, err
		}
		q8, err := NewQ8_0(d)
		if err != nil {
			return nil, err
		}
		qs = append(qs, k, q4, q8)
	}
	return qs, nil
}
