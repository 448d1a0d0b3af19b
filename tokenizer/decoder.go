package tokenizer

import "unicode/utf8"

// Decoder decodes a stream of token ids, such as a model's output, one id
// at a time. Next returns only complete UTF-8: the bytes of a character
// split across tokens (byte-fallback tokens like <0xE2><0x82><0xAC>, or
// byte-level pieces that cut a character) are held back until it is whole.
//
// A Decoder decodes a continuation of earlier text: unlike Decode, it keeps
// a "llama" model's space at the start of its first token ("▁Paris" after
// the prompt "The capital of France is" is " Paris"). It drops the space
// after special tokens as Decode does, so everything Next and Flush return
// for a sequence that starts with BOS (or any special token) equals Decode
// of it.
type Decoder struct {
	state   decodeState
	pending []byte
}

// NewDecoder returns a Decoder for the tokens that follow earlier text.
func (t *Tokenizer) NewDecoder() *Decoder {
	return &Decoder{state: decodeState{t: t}}
}

// Next returns the text that id completes; it may be empty.
func (d *Decoder) Next(id int32) string {
	d.pending = append(d.pending, d.state.piece(id)...)
	n := completeUTF8(d.pending)
	out := string(d.pending[:n])
	d.pending = append(d.pending[:0], d.pending[n:]...)
	return out
}

// Flush returns the bytes held back, an incomplete character, and empties
// the Decoder's buffer; call it at the end of the stream.
func (d *Decoder) Flush() string {
	out := string(d.pending)
	d.pending = d.pending[:0]
	return out
}

// completeUTF8 returns the length of b without its trailing incomplete
// character: the start of a multi-byte sequence that more bytes could still
// complete. Bytes that can never become valid UTF-8 are not held back.
func completeUTF8(b []byte) int {
	// An incomplete sequence is at most UTFMax-1 bytes: a lead byte and up
	// to two continuation bytes.
	for i := len(b) - 1; i >= 0 && i >= len(b)-(utf8.UTFMax-1); i-- {
		c := b[i]
		if c < utf8.RuneSelf {
			return len(b) // ASCII ends any sequence
		}
		if c >= 0xC0 { // a lead byte
			if !utf8.FullRune(b[i:]) {
				return i
			}
			return len(b)
		}
		// a continuation byte: look further back for its lead
	}
	return len(b)
}
