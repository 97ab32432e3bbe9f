"""Where and in what order: the matrix runner, the worker's group loop, executors (worker processes, the fork
server, Ray), the typed messages between them, resume, shards and merge."""
