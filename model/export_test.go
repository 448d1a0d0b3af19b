package model

import "github.com/turbomem/turbomem/tensor"

// PoolRegions returns the parallel regions m's pool has run so far
// (tensor.Pool.Regions), for the tests and benchmarks of package
// model_test.
func PoolRegions(m *Model) int64 { return m.pool.Regions() }

// SetPoolTrace makes m's pool record its regions in t
// (tensor.Pool.SetTrace), for the tests and benchmarks of package
// model_test.
func SetPoolTrace(m *Model, t *tensor.RegionTrace) { m.pool.SetTrace(t) }
