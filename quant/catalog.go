package quant

import (
	"fmt"
	"math"
)

// Standard returns the quantizers that reports compare at dimension d:
// for each integer rate b in rates, TurboMSE (plain and with the
// projection correction) and TurboProd; for each rate k+0.5, TurboQuant
// with d/4 outlier channels at k+1 bits and the rest at k (the first d/4
// channels: for isotropic test vectors any choice is equivalent).
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
	return qs, nil
}
