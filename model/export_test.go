package model

// PoolRegions returns the parallel regions m's pool has run so far
// (tensor.Pool.Regions), for the tests and benchmarks of package
// model_test.
func PoolRegions(m *Model) int64 { return m.pool.Regions() }
