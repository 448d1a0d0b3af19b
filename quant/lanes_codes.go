package quant

import "fmt"

// AppendCodes adds tokens given as their quantizer's codes (Bytes each,
// back to back, as Code writes them) after the tokens held, moved into
// the lane layout as Append moves the codes it encodes: a cache restored
// from exported codes holds the very bytes of the cache that exported
// them.
func (l *Lanes) AppendCodes(codes []byte) error {
	if len(codes)%l.code != 0 {
		return fmt.Errorf("quant: lanes: %d bytes of codes, not a multiple of the %d-byte code", len(codes), l.code)
	}
	for i := 0; i < len(codes); i += l.code {
		if l.n%laneBlock == 0 {
			k := len(l.data) - laneSlack
			l.data = append(l.data, make([]byte, l.block)...)
			clear(l.data[k:])
		}
		l.put(l.data[l.n/laneBlock*l.block:], l.n%laneBlock, codes[i:i+l.code])
		l.n++
	}
	return nil
}
