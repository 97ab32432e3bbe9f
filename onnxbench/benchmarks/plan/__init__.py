"""What to run: the matrix (its axes, the embedded default, TOML files and flag overrides) and the model sources
that turn the axes into cells, artifacts, inputs and references."""
