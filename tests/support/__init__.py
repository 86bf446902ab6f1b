"""Helpers the tests share, and the product benchmarks that drive the service the same way
(benchmarks/serve_latency.py, load_offline.py): API Gateway events, the local stack on free
ports, the shared photos. Only tests/support is imported from outside tests/, never a test module."""
