package eval

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

// MeasureCovariances records the model's keys and values on the last
// chunks windows of ctxLen tokens of calib (the first token of each
// window replaced by bos, as the perplexity windows start) and returns
// their moments per layer and KV head (kvcache.EstimateCovariances): the
// calibration of the klt formats.
func MeasureCovariances(ctx context.Context, m *model.Model, calib []int32, bos int32, ctxLen, chunks int) (*kvcache.Covariances, error) {
	ctxLen = min(ctxLen, m.Config.Context)
	if ctxLen < 2 || chunks < 1 || len(calib) < ctxLen*chunks {
		return nil, fmt.Errorf("%w: klt calibration: %d windows of %d tokens need %d tokens of calibration text; it has %d", ErrKVRequest, chunks, ctxLen, ctxLen*chunks, len(calib))
	}
	calib = calib[len(calib)-ctxLen*chunks:]
	windows := make([][]*kvcache.Trace, chunks)
	for i := range windows {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		w := append([]int32{bos}, calib[i*ctxLen+1:(i+1)*ctxLen]...)
		tr, err := RecordKV(m, w, -1)
		if err != nil {
			return nil, err
		}
		windows[i] = tr
	}
	return kvcache.EstimateCovariances(windows)
}

// covariances returns MeasureCovariances' moments of the last chunks
// windows of ctxLen tokens of calib, read from o.CovFile where that file
// exists and holds the moments of the same model (o.Model) and tokens;
// else measured (what says what for, in the log line) and, where
// o.CovFile names a file, saved there. A file of another model or text
// is refused (ErrKVRequest), an altered one is an error
// (kvcache.ErrCovFile).
func covariances(ctx context.Context, m *model.Model, calib []int32, bos int32, ctxLen, chunks int, o KVPlanOptions, what string) (*kvcache.Covariances, error) {
	ctxLen = min(ctxLen, m.Config.Context)
	var source string
	if o.CovFile != "" {
		if o.Model == "" {
			return nil, fmt.Errorf("eval: a covariance file needs the model's SHA-256 (KVPlanOptions.Model) to be checked against")
		}
		if len(calib) < ctxLen*chunks {
			return nil, fmt.Errorf("%w: klt calibration: %d windows of %d tokens need %d tokens of calibration text; it has %d", ErrKVRequest, chunks, ctxLen, ctxLen*chunks, len(calib))
		}
		b := binary.LittleEndian.AppendUint32(nil, uint32(bos))
		for _, t := range calib[len(calib)-ctxLen*chunks:] {
			b = binary.LittleEndian.AppendUint32(b, uint32(t))
		}
		sum := sha256.Sum256(b)
		source = fmt.Sprintf("model sha256 %s; %d windows of %d tokens; tokens sha256 %x", o.Model, chunks, ctxLen, sum)
		f, err := os.Open(o.CovFile)
		switch {
		case err == nil:
			defer f.Close()
			got, err := kvcache.ReadCovariances(f)
			if err != nil {
				return nil, fmt.Errorf("eval: %s: %w", o.CovFile, err)
			}
			if got.Source != source {
				return nil, fmt.Errorf("%w: %s holds K/V covariances of another model or calibration (%s), not of %s: remove it or name another file", ErrKVRequest, o.CovFile, got.Source, source)
			}
			if got.Cov.Profiled() {
				o.log("K/V covariances read from %s", o.CovFile)
				return got.Cov, nil
			}
			o.log("%s holds no attention profiles (written before they were measured): measuring again", o.CovFile)
		case !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("eval: %w", err)
		}
	}
	o.log("measuring K/V covariances for %s on %d windows of %d tokens", what, chunks, ctxLen)
	cov, err := MeasureCovariances(ctx, m, calib, bos, ctxLen, chunks)
	if err != nil {
		return nil, err
	}
	if o.CovFile != "" {
		if err := SaveFile(o.CovFile, kvcache.CovarianceFile{Cov: cov, Source: source}); err != nil {
			return nil, err
		}
		o.log("K/V covariances saved to %s", o.CovFile)
	}
	return cov, nil
}
