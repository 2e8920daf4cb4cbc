"""Start both simulators: in-process (``Simulators``), blocking (``serve_forever``) or as a module.

python -m worker.sandbox.server --oracle-port 8801 --caliq-port 8802
"""

from __future__ import annotations

import argparse
import threading
import time
from types import TracebackType
from typing import Any

from worker.sandbox import http_headers
from worker.sandbox.base import SimServer, SimState
from worker.sandbox.caliq import CaliqSimulator
from worker.sandbox.oracle import OracleSimulator


class Simulators:
    """Both CRM simulators on their own ports, each served from a daemon thread."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        oracle_port: int = 0,
        caliq_port: int = 0,
        oracle_username: str = "sandbox",
        oracle_password: str = "sandbox-password",
        oracle_token: str = "sandbox-token",
        caliq_api_key: str = "sandbox-key",
        latency_ms: float = 0,
    ) -> None:
        self.host = host
        self._ports = {"oracle": oracle_port, "caliq": caliq_port}
        self.oracle_state = OracleSimulator(
            oracle_username, oracle_password, oracle_token, latency_ms=latency_ms
        )
        self.caliq_state = CaliqSimulator(caliq_api_key, latency_ms=latency_ms)
        self._servers: dict[str, SimServer] = {}
        self._threads: list[threading.Thread] = []

    def start(self) -> Simulators:
        if self._servers:
            return self
        states: dict[str, SimState] = {"oracle": self.oracle_state, "caliq": self.caliq_state}
        for name, state in states.items():
            server = SimServer((self.host, self._ports[name]), state)
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name=f"sandbox-{name}",
                daemon=True,
            )
            thread.start()
            self._servers[name] = server
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers.values():
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> Simulators:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def oracle_url(self) -> str:
        """Host root; callsync appends /crmRestApi/resources/{version}."""
        return self._url("oracle")

    @property
    def caliq_url(self) -> str:
        """Host root; callsync POSTs to {caliq_url}/api/v1/InteractionCreate."""
        return self._url("caliq")

    def _url(self, name: str) -> str:
        server = self._servers.get(name)
        if server is None:
            raise RuntimeError("simulators are not started")
        host, port = server.server_address[:2]
        # A wildcard bind is reachable on loopback; a URL cannot name 0.0.0.0 portably.
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{shown}:{port}"


def serve_forever(
    host: str = "127.0.0.1", oracle_port: int = 8801, caliq_port: int = 8802, **creds: Any
) -> None:
    """Run both simulators until Ctrl-C. ``creds`` are the remaining ``Simulators`` arguments."""
    with Simulators(host, oracle_port, caliq_port, **creds) as sims:
        print(f"Oracle simulator: {sims.oracle_url}/crmRestApi/resources/11.13.18.05", flush=True)
        print(f"Caliq simulator:  {sims.caliq_url}/api/v1/InteractionCreate", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping simulators", flush=True)


def main(argv: list[str] | None = None) -> None:
    # This process only serves the simulators: their request headers skip the email parser.
    http_headers.install()
    parser = argparse.ArgumentParser(description="Oracle Fusion and Caliq sandbox simulators")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--oracle-port", type=int, default=8801)
    parser.add_argument("--caliq-port", type=int, default=8802)
    parser.add_argument("--oracle-username", default="sandbox")
    parser.add_argument("--oracle-password", default="sandbox-password")
    parser.add_argument("--oracle-token", default="sandbox-token")
    parser.add_argument("--caliq-api-key", default="sandbox-key")
    parser.add_argument("--latency-ms", type=float, default=0)
    args = parser.parse_args(argv)
    serve_forever(
        args.host,
        args.oracle_port,
        args.caliq_port,
        oracle_username=args.oracle_username,
        oracle_password=args.oracle_password,
        oracle_token=args.oracle_token,
        caliq_api_key=args.caliq_api_key,
        latency_ms=args.latency_ms,
    )


if __name__ == "__main__":
    main()
