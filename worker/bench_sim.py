"""The simulators as the benchmark runs them: `worker.sandbox.server`, with Nagle's algorithm off.

The sandbox writes a response's headers and body in two sends; with Nagle on, the body waits for
the client's delayed ACK of the headers (up to 40 ms on Linux), which would turn "0 ms latency"
into ~25 ms per request and measure the simulator instead of callsync. Real CRMs' servers do
not behave so; StreamRequestHandler's own switch fixes it.

python -m worker.bench_sim --oracle-port 8801 --caliq-port 8802 --latency-ms 0
"""

from __future__ import annotations

from worker.sandbox import server
from worker.sandbox.base import SimHandler


def main(argv: list[str] | None = None) -> None:
    SimHandler.disable_nagle_algorithm = True
    server.main(argv)


if __name__ == "__main__":
    main()
