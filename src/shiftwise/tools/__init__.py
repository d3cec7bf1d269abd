"""Tools behind the command line: training, evaluation, benchmarks, conversion, export."""
