"""Data for training and benchmarks: `prepare` (photos -> aligned crops + landmarks + manifest) and
`dataset` (on-the-fly degraded training samples with same-person references)."""
