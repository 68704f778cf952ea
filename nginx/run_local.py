#!/usr/bin/env python3
"""run-local: several holistream instances behind one nginx, in the foreground.

    nginx/run-local                        2 instances on 8001-8002, nginx on http://127.0.0.1:8080/
    nginx/run-local -n 3 --tls             3 instances, also https://127.0.0.1:8443/ (self-signed)
    nginx/run-local --host 0.0.0.0 --tls --cert-name 192.168.1.20
                                           the demo for a phone on the LAN: https://192.168.1.20:8443/
    nginx/run-local --upstream 10.0.0.11:8000 --upstream 10.0.0.12:8000
                                           nginx only, in front of instances running elsewhere
    nginx/run-local --render-only --out DIR --upstream HOST:PORT ...
                                           write the configs for a system nginx, check them, exit
    nginx/run-local -- --max-sessions 10   arguments after -- go to every `holistream serve`

Instances listen on 127.0.0.1 only (nginx is the entry point) and trust X-Forwarded-For from
127.0.0.1, where nginx connects from. Each gets a CPU share of cores / N (`--cpus`, which its
admission budgets against) and cores / N inference workers (at least 1) unless --workers says
otherwise, so N instances neither oversubscribe the machine nor promise more than it has.

Ctrl-C or SIGTERM stops everything: the instances first (their sessions get a 1001 close through
nginx), then nginx; whatever is still running after its grace period is killed with its whole
process group. A second Ctrl-C skips the grace periods. Children also get SIGTERM if this launcher
dies without cleaning up (Linux PR_SET_PDEATHSIG), so nothing is left behind.

The rendering half (`Layout`, `render`, `nginx_test`) is what the tests use; it only needs the
standard library.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import grp
import os
import pwd
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MAKE_CERT = HERE / "make-cert"
TEMPLATES = ("nginx.conf", "holistream.conf", "holistream-locations.conf", "holistream-tls.conf")
DEFAULT_CERT_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "holistream/tls"
DEFAULT_MAX_BODY = 4 * 1024 * 1024  # the server's --max-message-bytes default
_PLACEHOLDER = re.compile(r"@[A-Z_]+@")
# Characters that would need quoting in nginx's config language; paths with them are refused.
_UNSAFE_PATH = re.compile(r"[\s;{}\"'$#\\]")
_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$")


class LaunchError(Exception):
    """A problem the user must fix (port taken, nginx missing, bad argument)."""


# --- rendering ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Everything the templates need; the defaults are the documented ones."""

    upstreams: tuple[str, ...]  # HOST:PORT of each instance, in index order
    listen: str = "127.0.0.1:8080"  # nginx `listen` for plain HTTP
    tls_listen: str | None = None  # `listen` for HTTPS/WSS; None = no TLS server block
    cert: Path | None = None
    key: Path | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY
    connect_rate: int = 20  # new WebSocket sessions per second per client address
    connect_burst: int = 100  # sessions an address may open at once above that rate
    max_conns_per_address: int = 200  # concurrent WebSocket sessions per client address
    max_fails: int = 1
    fail_timeout_s: int = 10
    operator_allow: tuple[str, ...] = ("127.0.0.1", "::1")  # who may see /instances/, /nginx_status
    user: str | None = field(default=None)  # `user` for the workers when started as root

    def __post_init__(self) -> None:
        if not self.upstreams:
            raise LaunchError("at least one upstream instance is needed")
        for address in self.upstreams:
            if not _ADDRESS.match(address):
                raise LaunchError(f"upstream {address!r} is not HOST:PORT ([v6]:PORT for IPv6)")
        if self.tls_listen is not None and (self.cert is None or self.key is None):
            raise LaunchError("a TLS listener needs a certificate and a key")
        for number in (self.max_body_bytes, self.connect_rate, self.connect_burst,
                       self.max_conns_per_address, self.max_fails, self.fail_timeout_s):
            if number < 1:
                raise LaunchError("limits must be positive")


def _safe_path(path: Path) -> str:
    text = str(path.resolve())
    if _UNSAFE_PATH.search(text):
        raise LaunchError(f"{text!r}: nginx config paths must not contain spaces or ;{{}}\"'$#\\")
    return text


def _worker_user() -> str | None:
    """When started as root, nginx's workers drop to this user (as a system nginx does)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("nobody")
        return f"nobody {grp.getgrgid(entry.pw_gid).gr_name}"
    except KeyError:
        return None


def _fill(template: str, values: dict[str, str], name: str) -> str:
    def replace(match: re.Match[str]) -> str:
        key = match.group(0)[1:-1]
        if key not in values:
            raise LaunchError(f"{name}: no value for placeholder {match.group(0)}")
        return values[key]

    return _PLACEHOLDER.sub(replace, template)


def render(layout: Layout, out_dir: Path) -> Path:
    """Write the rendered configs into out_dir (created); returns the standalone nginx.conf.

    holistream.conf, holistream-locations.conf and holistream-tls.conf are also what a system
    nginx includes; they refer to each other (and to instances.txt, the list of instances served
    at /instances/) by absolute path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "temp").mkdir(exist_ok=True)
    out = _safe_path(out_dir)
    indent = " " * 4
    access = [f"{indent}allow {a};" for a in layout.operator_allow] + [f"{indent}deny all;"]
    instances = []
    for index, address in enumerate(layout.upstreams):
        instances.append(
            f"\n{indent}location /instances/{index}/ {{\n"
            f"{indent * 2}proxy_pass http://{address}/;\n"
            f"{indent}}}"
        )
    servers = "\n".join(
        f"{indent}server {a} max_fails={layout.max_fails} fail_timeout={layout.fail_timeout_s}s;"
        for a in layout.upstreams
    )
    includes = [f"{indent}include {out}/holistream.conf;"]
    if layout.tls_listen is not None:
        includes.append(f"{indent}include {out}/holistream-tls.conf;")
    user = layout.user if layout.user is not None else _worker_user()
    values = {
        "RUN_DIR": out,
        "USER": f"user {user};" if user else "# (not root: the workers run as the invoking user)",
        "INCLUDES": "\n".join(includes),
        "UPSTREAM_SERVERS": servers,
        "LISTEN": layout.listen,
        "LOCATIONS": f"{out}/holistream-locations.conf",
        "CONNECT_RATE": str(layout.connect_rate),
        "CONNECT_BURST": str(layout.connect_burst),
        "MAX_CONNS_PER_ADDRESS": str(layout.max_conns_per_address),
        "MAX_BODY": str(layout.max_body_bytes),
        "OPERATOR_ACCESS": "\n".join(access),
        "INSTANCE_LOCATIONS": "".join(instances),
        "TLS_LISTEN": layout.tls_listen or "",
        "CERT": _safe_path(layout.cert) if layout.cert else "",
        "KEY": _safe_path(layout.key) if layout.key else "",
    }
    (out_dir / "instances.txt").write_text(
        "".join(f"{i} {a}\n" for i, a in enumerate(layout.upstreams))
    )
    for name in TEMPLATES:
        if name == "holistream-tls.conf" and layout.tls_listen is None:
            (out_dir / name).unlink(missing_ok=True)
            continue
        text = _fill((HERE / name).read_text(), values, name)
        (out_dir / name).write_text(text)
    return out_dir / "nginx.conf"


def unreachable_by_workers(path: Path) -> Path | None:
    """Started as root, nginx's workers run as nobody and spill request bodies and large
    responses (the demo's scripts) into temp/ of the run directory: every directory on the way
    must let others through. The first one that does not, or None."""
    if os.geteuid() != 0:
        return None
    for folder in [path.resolve(), *path.resolve().parents]:
        if folder.exists() and not folder.stat().st_mode & 0o001:
            return folder
    return None


def find_nginx() -> str:
    """The nginx binary (Debian puts it in /usr/sbin, which a user's PATH may lack)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin:/usr/local/sbin"
    found = shutil.which("nginx", path=path)
    if found is None:
        raise LaunchError("nginx is not installed (Debian: apt-get install nginx)")
    return found


def nginx_args(nginx: str, conf: Path) -> list[str]:
    """nginx with its prefix in the run directory and start-up errors on stderr."""
    return [nginx, "-p", str(conf.parent) + "/", "-c", str(conf), "-e", "stderr"]


def nginx_test(nginx: str, conf: Path) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on a rendered config; returncode 0 when valid (output in stderr)."""
    return subprocess.run([*nginx_args(nginx, conf), "-t"], capture_output=True, text=True,
                          timeout=30, check=False)


def listen_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers(instances: int) -> int:
    """Inference workers per instance so that N instances share the cores: cores / N, >= 1."""
    return max(1, _cores() // max(1, instances))


def cpu_share(instances: int) -> float:
    """Each instance's `--cpus`: cores / N, so that together they never admit more sessions
    than the machine holds (each would otherwise budget for the whole machine)."""
    return round(_cores() / max(1, instances), 3)


# --- certificates -------------------------------------------------------------------------------


def cert_names(cert: Path) -> str:
    """The subjectAltName of a certificate, as openssl prints it ('' if unreadable)."""
    proc = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-ext", "subjectAltName"],
                          capture_output=True, text=True, timeout=10, check=False)
    return proc.stdout if proc.returncode == 0 else ""


def ensure_cert(cert_dir: Path, names: Sequence[str]) -> tuple[Path, Path]:
    """The certificate and key in cert_dir, made by make-cert when missing or lacking a name."""
    cert, key = cert_dir / "holistream.crt", cert_dir / "holistream.key"
    if cert.exists() and key.exists():
        sans = cert_names(cert)
        if all(re.search(rf"(DNS|IP Address):{re.escape(n)}(,|$)", sans, re.M) for n in names):
            return cert, key
    proc = subprocess.run([str(MAKE_CERT), "-o", str(cert_dir), *names], capture_output=True,
                          text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise LaunchError(f"make-cert failed:\n{proc.stdout}{proc.stderr}")
    print(proc.stdout, end="", flush=True)
    return cert, key


# --- processes ----------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_libc: ctypes.CDLL | None = None
with contextlib.suppress(OSError):
    _libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent(parent: int) -> None:
    """In the child before exec: get SIGTERM when the launcher dies, even by SIGKILL."""
    if _libc is not None and sys.platform.startswith("linux"):
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the launcher died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    buffer: bytes = b""
    reported: bool = False  # its exit was announced

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


class Supervisor:
    """Children in their own process groups, their output prefixed on ours, one thread."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.children: list[Child] = []
        self.selector = selectors.DefaultSelector()
        self.out = out or sys.stdout
        self.signals: list[int] = []

    def on_signal(self, signum: int, _frame: object) -> None:
        self.signals.append(signum)

    def spawn(self, name: str, args: Sequence[str], env: dict[str, str] | None = None) -> Child:
        parent = os.getpid()
        proc = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            process_group=0,  # Ctrl-C reaches only us; we stop them in order
            preexec_fn=lambda: _die_with_parent(parent),  # one thread: safe here
        )
        child = Child(name, proc)
        assert proc.stdout is not None
        self.selector.register(proc.stdout, selectors.EVENT_READ, child)
        self.children.append(child)
        return child

    def say(self, text: str) -> None:
        print(f"run-local: {text}", file=self.out, flush=True)

    def pump(self, timeout: float) -> None:
        """Copy whatever the children printed, prefixed with their names; wait at most timeout."""
        if not self.selector.get_map():
            time.sleep(timeout)
            return
        for key, _ in self.selector.select(timeout):
            child: Child = key.data
            data = os.read(key.fd, 65536)
            if not data:
                self.selector.unregister(key.fileobj)
                data = b"\n" if child.buffer else b""
            child.buffer += data
            *lines, child.buffer = child.buffer.split(b"\n")
            for line in lines:
                text = line.decode(errors="replace")
                print(f"[{child.name}] {text}", file=self.out, flush=True)

    def wait(self, children: Sequence[Child], timeout: float) -> bool:
        """Pump output until every child has exited or timeout; True if all exited."""
        deadline = time.monotonic() + timeout
        while any(c.alive for c in children):
            if time.monotonic() >= deadline:
                return False
            self.pump(0.1)
        return True

    def stop(self, children: Sequence[Child], sig: int, grace: float) -> None:
        """Signal the children, wait up to grace, then kill their process groups."""
        for child in children:
            if child.alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.proc.pid, sig)
        if not self.wait(children, grace if len(self.signals) < 2 else 0.0):
            for child in children:
                if child.alive:
                    self.say(f"{child.name} did not stop in {grace:g} s: killing it")
        for child in children:
            self.kill_group(child)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(5)

    @staticmethod
    def kill_group(child: Child) -> None:
        """SIGKILL whatever is left in the child's process group (e.g. orphaned workers)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.proc.pid, signal.SIGKILL)

    def close(self) -> None:
        self.pump(0)
        for child in self.children:
            if child.proc.stdout is not None:
                child.proc.stdout.close()
        self.selector.close()


def _http_ok(url: str, timeout: float = 1.0) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxies
    try:
        with opener.open(url, timeout=timeout) as response:
            return int(response.status) == 200
    except (OSError, urllib.error.URLError):
        return False


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _connectable(host: str, port: int) -> bool:
    target = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    try:
        with socket.create_connection((target, port), timeout=0.5):
            return True
    except OSError:
        return False


def _holistream_binary(explicit: str | None) -> str:
    candidates = [explicit] if explicit else [
        str(ROOT / ".venv" / "bin" / "holistream"),
        str(Path(sys.executable).parent / "holistream"),
        shutil.which("holistream") or "",
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise LaunchError("holistream is not installed: run scripts/setup (or pass --holistream)")


def _max_message_bytes(serve_args: Sequence[str]) -> int:
    """The instances' --max-message-bytes, so nginx's body limit matches theirs."""
    value = os.environ.get("HOLISTREAM_MAX_MESSAGE_BYTES")
    for i, arg in enumerate(serve_args):
        if arg == "--max-message-bytes" and i + 1 < len(serve_args):
            value = serve_args[i + 1]
        elif arg.startswith("--max-message-bytes="):
            value = arg.partition("=")[2]
    try:
        return int(value) if value else DEFAULT_MAX_BODY
    except ValueError as exc:
        raise LaunchError(f"--max-message-bytes {value!r} is not a number") from exc


# --- command line -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    serve_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, serve_args = argv[:cut], argv[cut + 1 :]
    p = argparse.ArgumentParser(
        prog="run-local",
        description="Several holistream instances behind one nginx, in the foreground.",
        epilog="Arguments after -- are passed to every `holistream serve`. See nginx/README.md.",
    )
    p.add_argument("-n", "--instances", type=int, default=2, help="instances to start (default 2)")
    p.add_argument("--base-port", type=int, default=8001,
                   help="the instances listen on 127.0.0.1:BASE..BASE+N-1 (default 8001)")
    p.add_argument("--workers", type=int, default=None,
                   help="inference workers per instance (default: cores / N, at least 1)")
    p.add_argument("--upstream", action="append", default=[], metavar="HOST:PORT",
                   help="use instances running elsewhere instead of starting any (repeat)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address nginx listens on (0.0.0.0: the LAN; default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="nginx HTTP port (default 8080)")
    p.add_argument("--tls", action=argparse.BooleanOptionalAction, default=False,
                   help="also serve HTTPS/WSS (default off)")
    p.add_argument("--tls-port", type=int, default=8443, help="nginx HTTPS port (default 8443)")
    p.add_argument("--cert-dir", type=Path, default=DEFAULT_CERT_DIR,
                   help=f"where make-cert keeps the self-signed certificate ({DEFAULT_CERT_DIR})")
    p.add_argument("--cert-name", action="append", default=[], metavar="NAME_OR_IP",
                   help="a LAN address or name the certificate must cover (repeat)")
    p.add_argument("--cert", type=Path, help="your own certificate (with --key) instead")
    p.add_argument("--key", type=Path, help="the key of --cert")
    p.add_argument("--connect-rate", type=int, default=Layout.connect_rate,
                   help="new sessions per second per client address (nginx limit_req)")
    p.add_argument("--connect-burst", type=int, default=Layout.connect_burst,
                   help="sessions an address may open at once above --connect-rate")
    p.add_argument("--max-conns-per-address", type=int, default=Layout.max_conns_per_address,
                   help="concurrent sessions per client address (nginx limit_conn)")
    p.add_argument("--operator-allow", action="append", default=[], metavar="ADDRESS_OR_CIDR",
                   help="who may see /instances/ and /nginx_status (default: loopback; repeat)")
    p.add_argument("--run-dir", type=Path,
                   help="keep nginx's config, pid, logs and temp files here (default: a temp dir)")
    p.add_argument("--render-only", action="store_true",
                   help="write the configs to --out, check them with nginx -t, and exit")
    p.add_argument("--out", type=Path, help="with --render-only: the directory to write")
    p.add_argument("--nginx", help="the nginx binary (default: found on PATH or in /usr/sbin)")
    p.add_argument("--holistream", help="the holistream command (default: the repo's .venv)")
    p.add_argument("--ready-timeout", type=float, default=180.0,
                   help="seconds to wait for the instances to be ready")
    args = p.parse_args(argv)
    if args.instances < 1:
        p.error("--instances must be at least 1")
    if (args.cert is None) != (args.key is None):
        p.error("--cert and --key go together")
    if args.render_only and args.out is None and args.run_dir is None:
        p.error("--render-only needs --out DIR")
    return args, serve_args


def build_layout(args: argparse.Namespace, serve_args: Sequence[str]) -> Layout:
    upstreams = tuple(args.upstream) or tuple(
        f"127.0.0.1:{args.base_port + i}" for i in range(args.instances)
    )
    cert = key = None
    if args.tls:
        if args.cert is not None:
            cert, key = args.cert, args.key
        else:
            names = list(args.cert_name)
            if args.host not in ("0.0.0.0", "::", "127.0.0.1", "::1", "localhost"):
                names.append(args.host)
            cert, key = ensure_cert(args.cert_dir, names)
    return Layout(
        upstreams=upstreams,
        listen=listen_address(args.host, args.port),
        tls_listen=listen_address(args.host, args.tls_port) if args.tls else None,
        cert=cert,
        key=key,
        max_body_bytes=_max_message_bytes(serve_args),
        connect_rate=args.connect_rate,
        connect_burst=args.connect_burst,
        max_conns_per_address=args.max_conns_per_address,
        operator_allow=tuple(args.operator_allow) or Layout.operator_allow,
    )


def _banner(args: argparse.Namespace, layout: Layout, workers: int | None, run_dir: Path) -> str:
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    shown = f"[{shown}]" if ":" in shown else shown
    lines = [f"demo        http://{shown}:{args.port}/   (WebSocket: ws://{shown}:{args.port}/ws)"]
    if layout.tls_listen:
        lines.append(f"tls         https://{shown}:{args.tls_port}/   (certificate: {layout.cert})")
    if args.host in ("0.0.0.0", "::"):
        lines.append("            listening on every interface: use this machine's LAN address")
    for i, address in enumerate(layout.upstreams):
        extra = f", {workers} worker{'s' if workers != 1 else ''}" if workers else ""
        lines.append(f"instance {i}  {address}{extra}   "
                     f"http://{shown}:{args.port}/instances/{i}/metrics")
    lines.append(f"run dir     {run_dir} (nginx.conf, access.log)")
    lines.append("stop        Ctrl-C")
    return "\n".join("  " + line for line in lines)


def run(args: argparse.Namespace, serve_args: list[str]) -> int:
    layout = build_layout(args, serve_args)
    if args.render_only:
        conf = render(layout, args.out or args.run_dir)
        print(f"rendered {conf.parent}: include {conf.parent / 'holistream.conf'}"
              + (f" and {conf.parent / 'holistream-tls.conf'}" if layout.tls_listen else "")
              + " in your http block (nginx.conf there is a standalone one for local runs)")
        try:
            nginx = args.nginx or find_nginx()
        except LaunchError as exc:
            print(f"not checked: {exc}")
            return 0
        check = nginx_test(nginx, conf)
        print(check.stderr.strip())
        return check.returncode

    nginx = args.nginx or find_nginx()

    start_instances = not args.upstream
    ports = [(args.host, args.port)] + ([(args.host, args.tls_port)] if args.tls else [])
    if start_instances:
        ports += [("127.0.0.1", args.base_port + i) for i in range(args.instances)]
    taken = [f"{h}:{p}" for h, p in ports if not port_free(h, p)]
    if taken:
        raise LaunchError(f"port(s) in use: {', '.join(taken)} (choose others with --port, "
                          "--tls-port, --base-port)")

    temporary = args.run_dir is None
    run_dir = Path(tempfile.mkdtemp(prefix="holistream-nginx-")) if temporary else args.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o755)  # nginx's workers (nobody, when started as root) use temp/ in here
    if (closed := unreachable_by_workers(run_dir)) is not None:
        raise LaunchError(f"nginx's workers (user nobody) cannot get through {closed}: "
                          "choose a --run-dir they can reach, e.g. under /tmp")
    conf = render(layout, run_dir)
    check = nginx_test(nginx, conf)
    if check.returncode != 0:
        raise LaunchError(f"nginx -t failed for {conf}:\n{check.stderr}")

    sup = Supervisor()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, sup.on_signal)
    instances: list[Child] = []
    nginx_child: Child | None = None
    workers = (args.workers or default_workers(args.instances)) if start_instances else None
    code = 0
    try:
        if start_instances:
            holistream = _holistream_binary(args.holistream)
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            for i in range(args.instances):
                cmd = [holistream, "serve", "--host", "127.0.0.1", "--port",
                       str(args.base_port + i), "--workers", str(workers),
                       "--cpus", str(cpu_share(args.instances)),
                       "--trusted-proxies", "127.0.0.1", *serve_args]
                instances.append(sup.spawn(f"i{i}", cmd, env))
            sup.say(f"starting {args.instances} instance(s), {workers} inference worker(s) each")
            pending = set(range(args.instances))
            deadline = time.monotonic() + args.ready_timeout
            while pending:
                if sup.signals:
                    return 130
                for i in list(pending):
                    if not instances[i].alive:
                        raise LaunchError(f"instance {i} exited with {instances[i].proc.returncode}"
                                          " before it was ready (see its log above)")
                    if _http_ok(f"http://127.0.0.1:{args.base_port + i}/readyz"):
                        pending.discard(i)
                if time.monotonic() > deadline:
                    raise LaunchError(f"instances {sorted(pending)} not ready after "
                                      f"{args.ready_timeout:g} s")
                sup.pump(0.2)

        nginx_child = sup.spawn("nginx", nginx_args(nginx, conf))
        deadline = time.monotonic() + 15
        while not _connectable(args.host, args.port):
            if not nginx_child.alive:
                raise LaunchError(f"nginx exited with {nginx_child.proc.returncode}")
            if time.monotonic() > deadline:
                raise LaunchError("nginx is not accepting connections after 15 s")
            if sup.signals:
                return 130
            sup.pump(0.1)
        print(_banner(args, layout, workers, run_dir), flush=True)
        sup.say("ready")

        while not sup.signals:
            sup.pump(0.5)
            if not nginx_child.alive:
                sup.say(f"nginx exited with {nginx_child.proc.returncode}: stopping")
                code = 1
                break
            for i, child in enumerate(instances):
                if not child.alive and not child.reported:
                    child.reported = True
                    sup.say(f"instance {i} exited with {child.proc.returncode}; nginx sends new "
                            "sessions to the others (restart run-local to bring it back)")
            if instances and not any(c.alive for c in instances):
                sup.say("every instance has exited: stopping")
                code = 1
                break
        if sup.signals:
            sup.say(f"{signal.Signals(sup.signals[0]).name}: stopping "
                    "(instances first, then nginx; Ctrl-C again to hurry)")
        return code
    finally:
        # Instances first: their sessions get a 1001 "shutting_down" close through nginx.
        sup.stop(instances, signal.SIGTERM, grace=15.0)
        if nginx_child is not None:
            sup.stop([nginx_child], signal.SIGQUIT, grace=12.0)  # graceful; shutdown timeout 10 s
        sup.close()
        if temporary:
            shutil.rmtree(run_dir, ignore_errors=True)
        sup.say("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    args, serve_args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args, serve_args)
    except LaunchError as exc:
        print(f"run-local: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
