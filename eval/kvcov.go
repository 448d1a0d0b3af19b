package eval

import (
	"context"
	"fmt"

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
