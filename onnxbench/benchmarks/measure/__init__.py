"""How fast and how much: the timing harness, the machine's ceilings, the work model (FLOPs and bytes, from the
formula and counted from the graph), process and device memory, and the tuning search."""
