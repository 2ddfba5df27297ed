"""`make bench`: benchmarks that each report a ratio between two things measured in the same run.

    python -m benchmarks                         # all of them, results into benchmarks/ (README table, json, png)
    python -m benchmarks latency serving         # a subset; the other sections of results.json are kept
    python -m benchmarks --quick --out DIR       # tiny sizes, for the tests

latency  ResNet-50 on CPU (2 threads): eager vs each TorchScript recipe vs ONNX Runtime
serving  p50/p99 through the real local serving stack vs an in-process forward of the same model.pt
synth    `cdk synth` of the whole app vs an empty CDK Python app, same CLI, same venv
build    cold build vs no-op rebuild; our reproducible tarball writer vs `tar czf`, MB/s
diff     `make diff` of a one-line config change, cold and warm (its cache), vs one `cdk synth` of the app

Targets are reported as PASS or MISS, never asserted: a miss is a finding, not a failure.
"""
