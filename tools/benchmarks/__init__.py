"""The rows of tools/benchmark.py, one module per family, and what they share.

  options        the benchmark's defaults and parsed settings (`Options`)
  environment    thread pools, the shared batching, the machine's description
  inputs         the data every in-process row uses (a data set or synthetic images)
  timing         a timed row (`Row`): steady and wall seconds, the best of repeats
  training_rows  a: plain Keras fit; b, c: rae_keras stacked and recursive
  pipeline_rows  d1: the input pipeline alone; d2: JPEG decoding alone
  in_process     the session rows a-d share: strategy, data, batching, warm-up, settings
  children       whole-process rows: child processes timed from outside (`Process`)
  memory_rows    memory, flat: peak RSS of one epoch at several sizes
  time_rows      plain (rae_keras vs a plain Keras child), marginal (recursive epoch)
  report         the targets, PASS/MISS verdicts and the printed tables
"""
