"""The publisher: the pages of docs/ that show the benches' figures, written from their JSON in
bench/results/ and nothing else (it measures nothing, and the same JSON gives the same pages).

    python -m bench.publish [--results DIR] [--docs DIR] [PAGE ...]

Pages: PERFORMANCE.md (performance.py, step_sections.py), RESULTS.md (results.py, study.py),
class_mean_sync.md and loader_benchmark.md (pages.py).
"""
