"""fxkit vs torch.fx benchmarks: same process, alternating repetitions, ratios only."""
