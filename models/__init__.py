"""Neural networks of tabfm: pure ``nn.Module``s with config dataclasses and no I/O."""
