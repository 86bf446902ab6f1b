"""The README's local run (`python -m scripts.local_stack`) started on free ports, for
the tests and the load benchmark.

stop() presses Ctrl-C the way a user does (SIGINT to the launcher only: it started
serverless-offline in a session of its own) and reports whatever it left running, so a
test can insist that Ctrl-C stops everything.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) for every live process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
            if fields[0] != "Z":  # zombies are already dead
                table[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return table


def descendant_groups(pid: int) -> set[int]:
    """Process groups of everything below pid (serverless-offline runs in one of its own)."""
    table, found, todo = process_table(), set(), [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, _) in table.items():
            if ppid == parent and child not in found:
                found.add(child)
                todo.append(child)
    return {table[p][1] for p in found if p in table} - {os.getpgid(0)}  # never our own group


class LocalStack:
    def __init__(self, log_path: Path, timeout: float = 180.0, extra_args: tuple[str, ...] = ()):
        self.api_port, self.lambda_port, self.web_port = free_port(), free_port(), free_port()
        self.ports = [self.api_port, self.lambda_port, self.web_port]
        self.api = f"http://127.0.0.1:{self.api_port}/dev"
        self.page = f"http://127.0.0.1:{self.web_port}/"
        self.log_path = log_path
        self.timeout = timeout
        self._log = open(log_path, "w")  # a file, not a pipe: nobody has to keep draining it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "scripts.local_stack", "--api-port", str(self.api_port),
             "--lambda-port", str(self.lambda_port), "--web-port", str(self.web_port), "--timeout", str(timeout),
             *extra_args],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._groups: set[int] = set()

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_ready(self) -> None:
        """Until the launcher prints the page's address (it does once /health answers)."""
        deadline = time.monotonic() + self.timeout + 30
        while time.monotonic() < deadline:
            self._groups |= descendant_groups(self.process.pid)
            if any(line.strip().startswith("Page:") for line in self.log_path.read_text(errors="replace").splitlines()):
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"the local stack exited ({self.process.returncode}):\n{self.log_tail()}")
            time.sleep(0.5)
        raise RuntimeError(f"the local stack was not ready after {self.timeout:.0f} s:\n{self.log_tail()}")

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.api + path, timeout=60) as response:
            return json.load(response)

    def post_form(self, path: str, fields: dict) -> tuple[int, dict]:
        """A multipart POST built like the handler tests' (tests.support.events.multipart_body)."""
        from tests.support.events import multipart_body

        body, content_type = multipart_body(fields)
        request = urllib.request.Request(self.api + path, data=body, method="POST",
                                         headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def stop(self) -> list[str]:
        """Ctrl-C, then what went wrong: a bad exit, processes or ports left behind. Never leaves
        anything running, even when it reports a problem."""
        self._groups |= descendant_groups(self.process.pid)
        problems = []
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                problems.append("the launcher did not exit within 30 s of Ctrl-C")
                self.process.kill()
                self.process.wait(timeout=10)
            if self.process.returncode not in (0, -signal.SIGINT):
                problems.append(f"the launcher exited with {self.process.returncode}")
        deadline = time.monotonic() + 10
        while (alive := {p for p, (_, g) in process_table().items() if g in self._groups}) and time.monotonic() < deadline:
            time.sleep(0.2)
        if alive:
            problems.append(f"processes left running after Ctrl-C: {sorted(alive)}")
        for group in self._groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if open_ports := [port for port in self.ports if port_open(port)]:
            problems.append(f"ports still answering: {open_ports}")
        self._log.close()
        return problems


class MotoServer:
    """moto's S3/IAM/CloudFormation server in a process of its own on loopback: a real HTTP
    endpoint whose state (IAM checks included) cannot leak into moto's in-process mocks."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1",
                                         "-p", str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto_server did not start on port {self.port}")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
