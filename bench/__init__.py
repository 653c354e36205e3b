"""The project's benchmarks and studies, run from the repository root as `python -m bench.<name>`.

Measuring and publishing are separate. Each measuring module writes JSON to bench/results/ (and
prints its figures); none writes docs/, except `ablations`, whose heatmaps need the trained runs
themselves and go to docs/figures/. One publisher, `python -m bench.publish`, reads the JSON and
writes the pages of docs/ that show them.

Measure:
- step_time: AllNC's training step against CE, by part (step_setup builds one configuration's step)
- class_mean_sync: the class-mean sync's cost, measured on 2 processes and estimated at scale
- loader: the streaming shard reader against map-style files
- worker_scaling: 1 -> 2 Ray Train workers
- sampler_shares: the Many / Medium / Few share of the re-balanced batch
- ufm_study: minority collapse in the unconstrained-features model
- tuned_study: each method as its sweep chose it, on every proxy
- ablations: the ablations and AllNC's reconstructed choices (ablation_jobs runs them)
- gpu_check, gpu_check_report, gpu_check_deps: the prepared GPU check (run through gpu_check.sh)

Publish (bench/publish/): docs/PERFORMANCE.md, docs/RESULTS.md, docs/class_mean_sync.md and
docs/loader_benchmark.md.

Importing this package imports nothing: gpu_check_deps must run where only the standard library does.
"""
