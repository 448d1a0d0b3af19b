// Package wquant quantizes a model's weights to mixed precision: it
// collects an importance matrix (CollectIMatrix), quantizes each weight
// matrix with importance-weighted scale fits (Quantizer), chooses a type
// per matrix from measured sensitivities under a size budget (Allocate)
// or reproduces llama.cpp's fixed recipes (Recipe), and writes the
// result as an ordinary GGUF file that llama.cpp loads, sealed with an
// integrity manifest that Verify checks.
//
// # Integrity manifest
//
// Every file wquant writes (models and imatrix files) carries these
// metadata keys after all others:
//
//	turbomem.manifest.version        uint32   1
//	turbomem.manifest.tool           string   the program that wrote the file
//	turbomem.manifest.source_sha256  string   hex SHA-256 of the file it was made from ("" if none)
//	turbomem.manifest.plan           string   the plan JSON that chose the types ("" if none)
//	turbomem.manifest.keys           [string] every other metadata key, in file order
//	turbomem.manifest.key_sha256     [string] per key: hex SHA-256 of its value's GGUF encoding
//	                                          (uint32 value type, then the payload, as in the file)
//	turbomem.manifest.tensors        [string] every tensor, in file order
//	turbomem.manifest.tensor_sha256  [string] per tensor: hex SHA-256 of its uint32 type id, uint32
//	                                          dimension count, uint64 dimensions (GGML order, little
//	                                          endian), then the SHA-256 of each 1 MiB piece of its
//	                                          data in order (the last piece may be shorter)
//	turbomem.manifest.sha256         string   hex SHA-256 over the eight fields above, each as uint64
//	                                          key length, key, and its value's GGUF encoding
//
// Tensors are hashed as lists of piece hashes so that every core checks
// at once, even a single large tensor, and each core two pieces of the
// same length side by side (internal/sha256x2). The keys under turbomem.manifest.
// are hashed by the last field only;
// tensor offsets and alignment padding are not hashed (the data are,
// wherever they lie). A file whose manifest checksum, any key's value,
// its key set, its tensor set or any tensor's hash differs is reported
// naming each key or tensor. The manifest detects damage and edits by
// anyone who does not recompute it; it is not a signature.
//
// # Checked cache
//
// With OpenOptions.CheckedCache (`--verify-cache`), --verify=lazy
// remembers the files whose complete check passed, as git's index
// remembers clean files: one small entry per file (device and inode) in
// the cache directory, holding the file's device, inode, size,
// modification and status-change times (nanoseconds) and its manifest's
// SHA-256, and a SHA-256 of that record. A later lazy open of a file
// whose record is unchanged skips the hashing. A file that changed less
// than 2 s before its check began is not remembered: a change within
// one tick of the kernel's clock can leave its times as they were
// ("racily clean" in git).
//
// What it covers: any change made through the file system — a write, a
// truncation, a write through a shared mapping once written back, a
// touch, another file renamed or copied over it — sets the file's
// status-change time (ctime) to the current time, which no program can
// set, or gives another inode, so the file is hashed again and a flipped
// byte is refused as without the cache. What it does not cover, and a
// check at every open does: damage that bypasses the file system (the
// storage's own bit rot, a failing disk, controller or cable, writes to
// the block device, a file system repaired under the file), a system
// clock set back to the moment of the check, file systems that do not
// keep ctime faithfully (some network and FUSE ones), and anyone who can
// write the cache directory (its entries are checksummed against damage,
// not signed). It is therefore off unless asked for; --verify=full never
// uses it, and it is kept only where the system says a file's identity
// (Linux).
//
// # Importance matrix file
//
// An imatrix file is a GGUF file in llama.cpp's imatrix layout, so that
// llama-quantize reads ours as well: general.type = "imatrix",
// imatrix.datasets ([string]), imatrix.chunk_count and imatrix.chunk_size
// (uint32), and for each weight matrix NAME two F32 tensors, NAME.in_sum2
// (the sum of x² of each input column over all calibration tokens, shape
// [columns]) and NAME.counts (the number of tokens, shape [1]); the
// importance of column j is in_sum2[j]/counts. Ours adds the manifest
// (its source is the model's SHA-256), and an altered file is refused.
// ReadIMatrixFile also reads llama.cpp's GGUF imatrix and its legacy
// imatrix.dat, which carry no checksum.
//
// # Plan file
//
// A plan (Plan.WriteTo) is JSON: the source model's SHA-256, the budget,
// the chosen type and size of every tensor, the predicted KL, the
// measured sensitivities it was chosen from, and a checksum field, the hex
// SHA-256 of the JSON encoding of the plan with that field empty. An
// edited plan is refused.
package wquant
