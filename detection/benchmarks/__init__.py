"""Building blocks of the benchmark commands (`manage.py bench_stream`).

`raw` imports no Django (it also runs alone, as `python -m detection.benchmarks.raw`);
`stream` holds the stream benchmark's baselines and its rate arithmetic.
"""
