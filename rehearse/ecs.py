"""One task of an ECS service: the image laid out as its Dockerfile says, run as the task definition says.

There is no container runtime here. The image becomes a directory (the task's root) holding what
the Dockerfile's COPY lines put there, owned by root as Docker leaves it; `RUN pip install` is
satisfied by this environment's packages (requirements checked against what is installed, a local
project copied in with its console scripts); the process runs as the image's USER with the
WORKDIR as its directory. Absolute container paths in the environment and the command (the
image's directories, /tmp, /home) are mapped into the task's root: there is no mount namespace.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from rehearse.assembly import Assembly, Stack
from rehearse.aws import Cloud
from rehearse.iam import Call, call_from_api, calls_from_api

VENV_BIN = Path(sys.executable).parent
# The interpreter the image's user runs: this environment's base Python, hard-linked outside any
# directory that user cannot enter (pyenv keeps it under /root), made once and reused.
PYTHON_CACHE = Path("/var/tmp/celery-fleet-rehearse")


def _reachable_by_others(path: Path) -> bool:
    return all(parent.stat().st_mode & 0o001 for parent in [path, *path.parents] if parent.is_dir())


def _linked_copy(base: Path, copy: Path, *, skip: Path) -> None:
    """`base` hard-linked file by file into `copy` (without `skip`), made whole before it is renamed."""
    partial = copy.with_name(f"{copy.name}.partial-{os.getpid()}")
    for directory, subdirs, files in os.walk(base):
        here = Path(directory)
        if here == skip or skip in here.parents:
            subdirs.clear()
            continue
        target = partial / here.relative_to(base)
        target.mkdir(parents=True, exist_ok=True)
        target.chmod(0o755)
        for name in files:
            source = here / name
            if source.is_symlink():
                (target / name).symlink_to(os.readlink(source))
            else:
                os.link(source, target / name)
    skip_copy = partial / skip.relative_to(base)
    skip_copy.mkdir(parents=True, exist_ok=True)
    PYTHON_CACHE.chmod(0o755)
    try:
        partial.rename(copy)
    except OSError:  # another rehearsal made it first
        shutil.rmtree(partial, ignore_errors=True)


def image_python(work: Path) -> tuple[Path, dict[str, str]]:
    """A bin directory with `python` and this environment's console scripts, usable by any user.

    A virtual environment of the base interpreter whose site-packages chain to this environment's:
    the packages `pip install` put in the image are those pinned here. Also the environment it
    needs (the copy's shared libpython, which the interpreter's RUNPATH would look for in the original).
    """
    env: dict[str, str] = {}
    base = Path(sys.base_prefix).resolve()
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if not _reachable_by_others(base / "bin"):
        copy = PYTHON_CACHE / f"{base.name}-{sys.version_info.micro}"
        if not copy.exists():
            _linked_copy(base, copy, skip=base / "lib" / version / "site-packages")
        base = copy
        env["LD_LIBRARY_PATH"] = str(copy / "lib")
    venv = work / "image-python"
    subprocess.run(
        [str(base / "bin" / version), "-m", "venv", "--without-pip", str(venv)],
        check=True,
        capture_output=True,
    )
    site = venv / "lib" / version / "site-packages"
    own_site = Path(sys.prefix) / "lib" / version / "site-packages"
    (site / "rehearsal.pth").write_text(f"import site; site.addsitedir({str(own_site)!r})\n")
    shutil.copy(Path(__file__).with_name("recorder.py"), site / "sitecustomize.py")
    shebang = f"#!{sys.prefix}/bin/python"
    for script in VENV_BIN.iterdir():
        if script.is_file() and not script.name.startswith(("python", "activate", "Activate")):
            try:
                text = script.read_text()
            except UnicodeDecodeError:
                continue
            first, _, rest = text.partition("\n")
            if first.startswith(shebang):
                (venv / "bin" / script.name).write_text(f"#!{venv / 'bin' / 'python'}\n{rest}")
                (venv / "bin" / script.name).chmod(0o755)
    for path in [venv, *venv.parents]:
        if path == Path("/"):
            break
        if path.is_dir() and work in [path, *path.parents]:
            path.chmod(path.stat().st_mode | 0o005)
    return venv / "bin", env


@dataclass
class Image:
    """One stage of a Dockerfile, as the rehearsal lays it out (the last stage is the image)."""

    root: Path
    python_bin: Path
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = "root"
    cmd: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    python_paths: list[str] = field(default_factory=list)
    container_dirs: set[str] = field(default_factory=lambda: {"tmp", "home"})
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    wheels: dict[str, Path] = field(default_factory=dict)

    def host_path(self, container_path: str) -> Path:
        return self.root / container_path.lstrip("/")

    def remap(self, value: str) -> str:
        """A container path (or a `--flag=path`, or a colon-separated list of them) as a host path."""

        def one(text: str) -> str:
            if text.startswith("/") and text.strip("/").split("/", 1)[0] in self.container_dirs:
                return str(self.host_path(text))
            return text

        if "=" in value and value.startswith("-"):
            flag, rest = value.split("=", 1)
            return f"{flag}={one(rest)}"
        if ":" in value and value.startswith("/"):
            return ":".join(one(part) for part in value.split(":"))
        return one(value)

    def user_ids(self, user: str | None = None) -> tuple[int, int, str] | None:
        """(uid, gid, home) of the USER (or `user`) from the image's own /etc/passwd, as Docker reads it."""
        name = user or self.user
        passwd = self.host_path("/etc/passwd")
        for line in passwd.read_text().splitlines() if passwd.exists() else []:
            fields = line.split(":")
            if len(fields) >= 6 and fields[0] == name:
                return int(fields[2]), int(fields[3]), fields[5]
        if name.isdigit():
            return int(name), int(name), "/"
        return None


def _logical_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not current and not stripped):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def _json_or_shell(argument: str) -> list[str]:
    if argument.startswith("["):
        return [str(item) for item in json.loads(argument)]
    return ["/bin/sh", "-c", argument]


def _env_pairs(argument: str) -> dict[str, str]:
    words = shlex.split(argument)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(word.split("=", 1) for word in words)


def _substitute(text: str, variables: dict[str, str]) -> str:
    return re.sub(
        r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)",
        lambda m: variables.get(m.group(1) or m.group(2), m.group(0)),
        text,
    )


def build_image(  # noqa: PLR0912, PLR0915 (one branch per Dockerfile instruction)
    context: Path, dockerfile: str, root: Path, python_bin: Path, *, platform: str = "linux/arm64"
) -> Image:
    """Lay out `context`/`dockerfile`'s image under `root` (each build stage beside it)."""
    arch = platform.rsplit("/", 1)[-1]
    arguments = {
        "TARGETPLATFORM": platform,
        "TARGETARCH": arch,
        "BUILDPLATFORM": "linux/amd64",
        "BUILDARCH": "amd64",
    }
    stages: dict[str, Image] = {}
    image: Image | None = None
    count = 0
    for line in _logical_lines((context / dockerfile).read_text()):
        instruction, _, argument = line.partition(" ")
        instruction, argument = instruction.upper(), argument.strip()
        if instruction == "ARG":
            name, _, default = argument.partition("=")
            arguments.setdefault(name.strip(), _substitute(default.strip().strip('"'), arguments))
            continue
        argument = _substitute(argument, {**arguments, **(image.env if image else {})})
        if instruction == "FROM":
            words = argument.split()
            stage_root = root.parent / f"{root.name}-stage{count}"
            image = Image(root=stage_root, python_bin=python_bin)
            _prepare_root(image)
            count += 1
            stages[str(count - 1)] = image
            if len(words) >= 3 and words[-2].upper() == "AS":
                stages[words[-1]] = image
            continue
        if image is None:
            raise ValueError(f"{dockerfile}: {instruction} before FROM")
        if instruction == "ENV":
            image.env.update(_env_pairs(argument))
        elif instruction == "WORKDIR":
            image.workdir = (
                argument if argument.startswith("/") else f"{image.workdir.rstrip('/')}/{argument}"
            )
            image.container_dirs.add(image.workdir.strip("/").split("/", 1)[0])
            image.host_path(image.workdir).mkdir(parents=True, exist_ok=True)
        elif instruction == "COPY":
            _copy(image, context, argument, stages)
        elif instruction == "RUN":
            _run(image, argument)
        elif instruction == "USER":
            image.user = argument.split(":", 1)[0]
        elif instruction == "CMD":
            image.cmd = _json_or_shell(argument)
        elif instruction == "ENTRYPOINT":
            image.entrypoint = _json_or_shell(argument)
        elif instruction not in {"LABEL", "EXPOSE", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}:
            image.notes.append(f"{instruction} not emulated")
    if image is None:
        raise ValueError(f"{dockerfile}: no FROM")
    # The last stage is the image: it lives at `root`.
    if root.exists():
        shutil.rmtree(root)
    image.root.rename(root)
    image.root = root
    final = str(root.parent / f"{root.name}-stage{count - 1}")
    image.python_paths = [str(p) for p in sorted(root.glob("usr/local/lib/python*/site-packages"))] + [
        p.replace(final, str(root)) for p in image.python_paths
    ]
    for stage in {id(s): s for s in stages.values() if s is not image}.values():
        image.notes += [f"build stage: {note}" for note in stage.notes]
        image.problems += [f"build stage: {problem}" for problem in stage.problems]
        shutil.rmtree(stage.root, ignore_errors=True)
    if image.user_ids() is None:
        image.problems.append(f"USER {image.user}: not in the image's /etc/passwd")
    return image


def _prepare_root(image: Image) -> None:
    for directory in ("tmp", "home", "usr/local/bin", "etc"):
        (image.root / directory).mkdir(parents=True, exist_ok=True)
    (image.root / "tmp").chmod(0o1777)
    image.root.chmod(0o755)
    # The base image's own users (python:*-slim has root and the system accounts).
    (image.root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (image.root / "etc/group").write_text("root:x:0:\n")


def _copy(image: Image, context: Path, argument: str, stages: dict[str, Image]) -> None:
    words = shlex.split(argument)
    options = {w.split("=", 1)[0]: [*w.split("=", 1), ""][1] for w in words if w.startswith("--")}
    *sources, destination = [w for w in words if not w.startswith("--")]
    origin = context
    if "--from" in options:
        stage = stages.get(options["--from"])
        if stage is None:
            image.problems.append(f"COPY --from={options['--from']}: no such build stage")
            return
        origin = stage.root
    if not destination.startswith("/"):
        destination = f"{image.workdir.rstrip('/')}/{destination}"
    image.container_dirs.add(destination.strip("/").split("/", 1)[0])
    target = image.host_path(destination)
    for source in sources:
        path = origin / source.lstrip("/")
        if not path.exists():
            where = (
                f"stage {options['--from']}" if "--from" in options else f"the build context {context.name}"
            )
            image.problems.append(f"COPY {source}: not in {where}")
            continue
        if path.is_dir():
            shutil.copytree(
                path, target, dirs_exist_ok=True, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
            )
            copied = target
        else:
            copied = target / path.name if destination.endswith("/") or len(sources) > 1 else target
            copied.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, copied)
        if options.get("--chown"):
            uid, _, gid = options["--chown"].partition(":")
            for item in [copied, *(copied.rglob("*") if copied.is_dir() else [])]:
                os.chown(item, int(uid), int(gid or uid), follow_symlinks=False)


def _run(image: Image, argument: str) -> None:  # noqa: PLR0912 (one branch per shell command)
    for command in re.split(r"\s*&&\s*", argument):
        if command.lstrip().startswith(("case ", "if ", "for ")):
            image.notes.append(
                f"RUN shell block {command.split()[0]!r} not emulated (the commands after it are)"
            )
            continue
        append = re.fullmatch(r"echo\s+(\"[^\"]*\"|'[^']*'|\S+)\s*(>>?)\s*(\S+)", command.strip())
        if append:
            text, mode, path = shlex.split(append.group(1))[0], append.group(2), append.group(3)
            with image.host_path(path).open("a" if mode == ">>" else "w") as handle:
                handle.write(text + "\n")
            continue
        words = shlex.split(command)
        if not words:
            continue
        if words[0] == "useradd":
            name = words[-1]
            uid = words[words.index("--uid") + 1] if "--uid" in words else "10001"
            with image.host_path("/etc/passwd").open("a") as handle:
                handle.write(f"{name}:x:{uid}:{uid}::/home/{name}:/bin/sh\n")
            if "--create-home" in words or "-m" in words:
                home = image.host_path(f"/home/{name}")
                home.mkdir(parents=True, exist_ok=True)
                os.chown(home, int(uid), int(uid))
        elif words[0] in {"pip", "pip3"} or words[:3] == ["python", "-m", "pip"]:
            _pip(image, words)
        elif words[0] == "rm":
            for path in [w for w in words[1:] if not w.startswith("-")]:
                host = image.host_path(path)
                if host.is_dir() and not host.is_symlink():
                    shutil.rmtree(host)
                else:
                    host.unlink(missing_ok=True)
        elif words[0] == "mkdir":
            for path in [w for w in words[1:] if not w.startswith("-")]:
                image.host_path(path).mkdir(parents=True, exist_ok=True)
        elif words[0] == "mv" and len(words) == 3:
            moved, to = image.host_path(words[1]), image.host_path(words[2])
            if moved.exists():
                to.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(moved, to)
            else:
                image.problems.append(f"RUN mv {words[1]}: no such file in the stage")
        elif words[0] == "cp":
            *copied, destination = [w for w in words[1:] if not w.startswith("-")]
            for name in copied:
                if image.host_path(name).exists():
                    dest = image.host_path(destination)
                    into = dest / Path(name).name if destination.endswith("/") or dest.is_dir() else dest
                    shutil.copy2(image.host_path(name), into)
        else:
            image.notes.append(f"RUN {command[:60]!r} not emulated")


def _pip(image: Image, words: list[str]) -> None:  # noqa: PLR0912 (one branch per pip option)
    verb_index = next(i for i, w in enumerate(words) if w in {"install", "wheel"})
    verb, arguments = words[verb_index], words[verb_index + 1 :]
    with_value = {
        "-r",
        "--requirement",
        "--target",
        "-t",
        "--wheel-dir",
        "-w",
        "--platform",
        "--implementation",
        "--python-version",
        "--only-binary",
        "-c",
    }
    target: str | None = None
    wheel_dir: str | None = None
    projects: list[Path] = []
    index = 0
    while index < len(arguments):
        word = arguments[index]
        value = arguments[index + 1] if word in with_value and index + 1 < len(arguments) else None
        if word.startswith("--") and "=" in word:
            word, value = word.split("=", 1)
        if word in {"-r", "--requirement"} and value:
            _check_requirements(image, value)
        elif word in {"--target", "-t"}:
            target = value
        elif word in {"--wheel-dir", "-w"}:
            wheel_dir = value
        elif word.startswith("/"):
            directory = word.rsplit("/", 1)[0] if word.endswith(".whl") else word
            project = (
                image.wheels.get(directory.rstrip("/")) if word.endswith(".whl") else image.host_path(word)
            )
            if project is None or not (project / "pyproject.toml").exists():
                image.problems.append(f"pip {verb} {word}: no project there")
            else:
                projects.append(project)
        if word in with_value and "=" not in arguments[index]:
            index += 1
        index += 1
    if verb == "wheel":
        if wheel_dir:
            for project in projects:
                # Keep the project's files: the source directory may be removed after the wheel is built.
                keep = image.root / ".rehearsal-wheels" / project.name
                shutil.copytree(project, keep, dirs_exist_ok=True)
                image.wheels[wheel_dir.rstrip("/")] = keep
        return
    for project in projects:
        _install_project(image, project, target)


def _check_requirements(image: Image, container_path: str) -> None:
    path = image.host_path(container_path)
    if not path.exists():
        image.problems.append(f"pip install -r {container_path}: no such file in the image")
        return
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*==\s*([^\s;]+)", line)
        if not match:
            continue
        name, version = match.group(1), match.group(3)
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            image.problems.append(f"{container_path}: {name}=={version} is not installed in this environment")
            continue
        if installed != version:
            image.problems.append(f"{container_path}: {name}=={version}, but {installed} is installed here")


def _install_project(image: Image, source: Path, target: str | None) -> None:
    """A local project as pip installs it: its packages into site-packages, its console scripts into bin."""
    project = tomllib.loads((source / "pyproject.toml").read_text())
    include = (
        project.get("tool", {})
        .get("setuptools", {})
        .get("packages", {})
        .get("find", {})
        .get("include", ["*"])
    )
    if target is not None:
        site, scripts = image.host_path(target), image.host_path(target) / "bin"
    else:
        site, scripts = (
            image.host_path("/usr/local/lib/rehearsal/site-packages"),
            image.host_path("/usr/local/bin"),
        )
        image.python_paths.append(str(site))
    site.mkdir(parents=True, exist_ok=True)
    for package in source.iterdir():
        if (package / "__init__.py").exists() and any(fnmatch.fnmatch(package.name, p) for p in include):
            shutil.copytree(
                package, site / package.name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
            )
    scripts.mkdir(parents=True, exist_ok=True)
    for script, entry in project.get("project", {}).get("scripts", {}).items():
        module, function = entry.split(":")
        wrapper = scripts / script
        python = image.python_bin / "python"
        wrapper.write_text(
            f"#!{python}\nimport sys\nfrom {module} import {function}\nsys.exit({function}())\n"
        )
        wrapper.chmod(0o755)


@dataclass
class HealthResult:
    healthy: bool
    output: str


@dataclass
class Task:
    """One running task of a service: its single essential container."""

    service: str
    container: dict[str, Any]
    image: Image
    env: dict[str, str]
    argv: list[str]
    user: str
    log_group: str
    stream: str
    stop_timeout_s: float
    task_id: str = ""
    arn: str = ""
    calls_file: Path | None = None
    execution_calls: list[Call] = field(default_factory=list)
    lines: list[tuple[int, str]] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    exit_code: int | None = None
    stop_seconds: float | None = None
    _pushed: int = 0
    _terminated: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Task:
        uid, gid, _ = self.image.user_ids(self.user) or (65534, 65534, "/")
        cwd = self.image.host_path(self.container.get("WorkingDirectory") or self.image.workdir)
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=cwd,
            user=uid,
            group=gid,
            extra_groups=[],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        for stream in (self.process.stdout, self.process.stderr):
            threading.Thread(target=self._read, args=(stream,), daemon=True).start()
        return self

    def _read(self, stream: Any) -> None:
        # The awslogs driver: one log event per line, stdout and stderr alike.
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            if line:
                with self._lock:
                    self.lines.append((int(time.time() * 1000), line))

    def task_calls(self, resolve_secret: Any) -> list[Call]:
        """The AWS calls the task's processes made (with the task role's credentials)."""
        if self.calls_file is None or not self.calls_file.exists():
            return []
        calls: list[Call] = []
        for line in self.calls_file.read_text().splitlines():
            raw = json.loads(line)
            calls += calls_from_api(
                raw["service"], raw["operation"], raw["params"], resolve_secret=resolve_secret
            )
        return calls

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def push_logs(self, cloud: Cloud) -> None:
        with self._lock:
            pending, self._pushed = self.lines[self._pushed :], len(self.lines)
        if pending:
            cloud.put_log_lines(self.log_group, self.stream, pending)

    def health_check(self) -> HealthResult | None:
        check = self.container.get("HealthCheck")
        if not check:
            return None
        command = [str(word) for word in check["Command"]]
        argv = command[1:] if command[0] == "CMD" else ["/bin/sh", "-c", " ".join(command[1:])]
        argv = [self.image.remap(word) for word in argv]
        resolved = shutil.which(argv[0], path=self.env.get("PATH")) if "/" not in argv[0] else argv[0]
        if resolved is None:
            return HealthResult(False, f"{argv[0]}: not found on the container's PATH")
        uid, gid, _ = self.image.user_ids(self.user) or (65534, 65534, "/")
        try:
            done = subprocess.run(
                [resolved, *argv[1:]],
                env=self.env,
                user=uid,
                group=gid,
                extra_groups=[],
                capture_output=True,
                text=True,
                timeout=float(check.get("Timeout", 5)),
                check=False,
                cwd=self.image.host_path(self.image.workdir),
            )
        except subprocess.TimeoutExpired:
            return HealthResult(False, f"timed out after {check.get('Timeout', 5)} s")
        return HealthResult(done.returncode == 0, (done.stdout + done.stderr).strip()[-300:])

    def terminate(self) -> None:
        """SIGTERM to the main process only, as ECS sends it (tini, PID 1 there, forwards it)."""
        if self.process is not None and self.process.poll() is None and self._terminated is None:
            self._terminated = time.monotonic()
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM (unless sent already), then SIGKILL to what is left after the stop timeout."""
        if self.process is None or self.exit_code is not None:
            return
        self.terminate()
        started = self._terminated or time.monotonic()
        try:
            self.exit_code = self.process.wait(
                timeout=max(0.0, started + self.stop_timeout_s - time.monotonic())
            )
            self.stop_seconds = time.monotonic() - started
        except subprocess.TimeoutExpired:
            self.exit_code = 137
        self.kill()

    def kill(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def make_task(
    assembly: Assembly,
    stack: Stack,
    service_logical: str,
    task_definition: dict[str, Any],
    *,
    cloud: Cloud,
    work: Path,
    extra_env: dict[str, str],
    stop_timeout_cap_s: float,
    python_bin: Path,
) -> tuple[Task, list[str]]:
    """The task of one service, laid out and resolved but not started; and problems found on the way."""
    problems: list[str] = []
    containers = task_definition.get("ContainerDefinitions", [])
    container = next((c for c in containers if c.get("Essential", True)), containers[0])
    context, dockerfile, platform = assembly.image_asset_for(container["Image"])
    task_id = uuid.uuid4().hex
    image = build_image(context, dockerfile, work / service_logical / "root", python_bin, platform=platform)
    problems += image.problems
    resolved = assembly.resolve(stack, container)
    env: dict[str, str] = {
        "PATH": f"{image.root / 'usr/local/bin'}:{python_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": image.remap((image.user_ids() or (0, 0, "/"))[2]),
        "HOSTNAME": f"ip-10-0-0-{len(service_logical)}",
        "AWS_EXECUTION_ENV": "AWS_ECS_FARGATE",
        **cloud.env(),
        **extra_env,
    }
    env.update({k: image.remap(v) for k, v in image.env.items()})
    for variable in resolved.get("Environment", []):
        env[variable["Name"]] = image.remap(str(variable["Value"]))
    options = resolved.get("LogConfiguration", {}).get("Options", {})
    log_group = str(options.get("awslogs-group", ""))
    stream = f"{options.get('awslogs-stream-prefix', 'ecs')}/{container.get('Name', 'container')}/{task_id}"
    execution_calls: list[Call] = []
    for secret in resolved.get("Secrets", []):
        value_from = str(secret["ValueFrom"])
        execution_calls.append(
            call_from_api(
                "secretsmanager",
                "GetSecretValue",
                {"SecretId": value_from.split(":::", maxsplit=1)[0]},
                resolve_secret=cloud.secret_arn,
            )
        )
        try:
            env[secret["Name"]] = cloud.secret_value(value_from)
        except Exception as error:  # ECS fails the task's start: the rehearsal reports it
            problems.append(f"secret {secret['Name']} from {value_from}: {error}")
    for operation in ("CreateLogStream", "PutLogEvents"):
        execution_calls.append(
            call_from_api(
                "logs",
                operation,
                {"logGroupName": log_group, "logStreamName": stream},
                resolve_secret=cloud.secret_arn,
            )
        )
    calls_file = work / service_logical / "aws-calls.jsonl"
    calls_file.touch()
    calls_file.chmod(0o666)
    env["REHEARSAL_AWS_CALLS"] = str(calls_file)
    if image.python_paths:
        env["PYTHONPATH"] = ":".join(
            [p for p in env.get("PYTHONPATH", "").split(":") if p] + image.python_paths
        )
    entrypoint = [str(w) for w in resolved.get("EntryPoint") or image.entrypoint]
    command = [str(w) for w in resolved.get("Command") or image.cmd]
    argv = [image.remap(word) for word in entrypoint + command]
    executable = (
        shutil.which(argv[0], path=env["PATH"])
        if argv and "/" not in argv[0]
        else (argv[0] if argv else None)
    )
    if executable is None:
        problems.append(f"command {argv[:1]}: not found on the container's PATH")
        argv = ["/bin/false"]
    else:
        argv[0] = executable
    stop_timeout = min(float(resolved.get("StopTimeout", 30)), stop_timeout_cap_s)
    task = Task(
        service=service_logical,
        container=resolved,
        image=image,
        env=env,
        argv=argv,
        user=resolved.get("User") or image.user,
        log_group=log_group,
        stream=stream,
        stop_timeout_s=stop_timeout,
        task_id=task_id,
        calls_file=calls_file,
        execution_calls=execution_calls,
    )
    return task, problems
