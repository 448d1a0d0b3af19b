// Package tokenizer turns text into token ids and back for the models that
// GGUF files describe, as llama.cpp's tokenizers (and, through them,
// Hugging Face's) do:
//
//   - "llama": SentencePiece-style BPE by score with byte fallback
//     (Llama-2, Mistral, TinyLlama). The text gets a leading space and its
//     spaces become "▁"; the adjacent pair whose concatenation is the
//     token of highest score merges first, the leftmost of equals.
//   - "gpt2": byte-level BPE by merge rank (Llama-3, Qwen2, SmolLM,
//     GPT-2), after the regex pre-tokenizer that tokenizer.ggml.pre names:
//     "gpt-2", "llama-bpe", "qwen2", "smollm" and their aliases in
//     llama.cpp, and "default" (also for an absent key).
//
// A Tokenizer is built by New from a Vocab that the caller fills from the
// GGUF keys tokenizer.ggml.*. It is immutable and safe for concurrent use;
// a Decoder is for one stream.
//
// # Agreement with the references
//
// The tests compare ids with Hugging Face tokenizers and SentencePiece
// (tools/tokref makes the fixtures): the pre-tokenizers piece for piece
// with the Oniguruma regexes on 250 strings; byte-level BPE vocabularies
// trained by tokenizers for each pre-tokenizer, on tricky strings and a
// 16 KB multilingual corpus; and the Llama-2 vocabulary against both
// tokenizers' BPE built as transformers' LlamaConverter builds it and
// SentencePiece itself. All ids match exactly.
//
// # Special tokens
//
// Control, user-defined and unknown tokens written literally in the text
// given to Encode ("<|eot_id|>", "<s>") become those tokens, as with
// llama.cpp's parse_special and Hugging Face's added tokens; where two
// could match, the leftmost and then the longest wins (Hugging Face's rule;
// llama.cpp splits on the longest token first, which differs only for
// overlapping special tokens). Their lstrip/rstrip flags, which GGUF does
// not store, are not applied. For "llama" models a space is prepended to
// the text after each special token too, as llama.cpp does and as Hugging
// Face's Prepend normalizer does for each piece between added tokens.
//
// # Round trips
//
// Decode(Encode(s, false)) == s for every string s, valid UTF-8 or not,
// with byte-level BPE (given its 256 byte tokens). With "llama" models the
// same holds unless s contains "▁" (U+2581), which decodes as a space.
// Decode applies no clean-up of spaces before punctuation (Hugging Face's
// clean_up_tokenization_spaces). Invalid UTF-8 is encoded byte by byte
// (byte-level tokens or <0xXX> byte fallback), so it survives the trip.
package tokenizer
