"""The end-to-end load benchmark: N concurrent simulated calls through one relay worker.

Modules: scenario (what the callers and the model say, the agent), procs (the processes it
starts, CPU pinning, and what /proc says about them), prom (reading relay's /metrics), floor
(the bare socket-work reference process), relay_serve (`relay serve` with its garbage
collector's pauses recorded), runner (one run of relay or of the floor at one N), report (the
tables, the targets and the chart). bench/bench_load.py is the command; results in
bench/RESULTS.md.
"""
