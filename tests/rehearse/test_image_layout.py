"""An image laid out from its Dockerfile the way Docker would build it, without Docker."""

from __future__ import annotations

from pathlib import Path

from rehearse.ecs import build_image

DOCKERFILE = """\
ARG PY=3.12
FROM --platform=$BUILDPLATFORM python:${PY}-slim AS build
COPY proj/ /tmp/proj/
RUN pip wheel --no-deps --wheel-dir /tmp/wheels /tmp/proj \\
    && pip install --target /install/site --no-compile /tmp/wheels/*.whl \\
    && mv /install/site/bin /install/bin \\
    && mkdir -p /install/etc \\
    && cp /etc/passwd /install/etc/ \\
    && echo "app:x:10002:10002::/home/app:/usr/sbin/nologin" >> /install/etc/passwd
FROM python:${PY}-slim
ENV GREETING=hello PYTHONPATH=/srv
COPY --from=build /install/etc/passwd /etc/
COPY --from=build /install/site /usr/local/lib/python${PY}/site-packages
COPY --from=build /install/bin /usr/local/bin
WORKDIR /srv
COPY app/ /srv/app/
USER app
CMD ["python", "-m", "app"]
"""


def _context(tmp_path: Path) -> Path:
    context = tmp_path / "context"
    (context / "proj" / "pkg").mkdir(parents=True)
    (context / "proj" / "pkg" / "__init__.py").write_text("")
    (context / "proj" / "pyproject.toml").write_text(
        '[project]\nname = "pkg"\nversion = "1"\n[project.scripts]\npkg-check = "pkg:main"\n'
    )
    (context / "app").mkdir()
    (context / "app" / "__main__.py").write_text("print('hi')\n")
    (context / "Dockerfile").write_text(DOCKERFILE)
    return context


def test_the_final_stage_holds_what_copy_from_the_build_stage_put_there(tmp_path: Path) -> None:
    image = build_image(_context(tmp_path), "Dockerfile", tmp_path / "root", tmp_path / "bin")
    assert (tmp_path / "root/usr/local/lib/python3.12/site-packages/pkg/__init__.py").exists()
    assert (tmp_path / "root/srv/app/__main__.py").exists()
    assert image.python_paths == [str(tmp_path / "root/usr/local/lib/python3.12/site-packages")]
    assert not image.problems


def test_console_scripts_of_an_installed_project_land_on_the_path(tmp_path: Path) -> None:
    build_image(_context(tmp_path), "Dockerfile", tmp_path / "root", tmp_path / "bin")
    script = tmp_path / "root/usr/local/bin/pkg-check"
    assert script.read_text().startswith(f"#!{tmp_path / 'bin' / 'python'}")
    assert "from pkg import main" in script.read_text()


def test_user_workdir_env_and_cmd_come_from_the_final_stage(tmp_path: Path) -> None:
    image = build_image(_context(tmp_path), "Dockerfile", tmp_path / "root", tmp_path / "bin")
    assert image.user_ids() == (10002, 10002, "/home/app")
    assert image.workdir == "/srv"
    assert image.env["GREETING"] == "hello"
    assert image.cmd == ["python", "-m", "app"]


def test_container_paths_map_into_the_task_root(tmp_path: Path) -> None:
    image = build_image(_context(tmp_path), "Dockerfile", tmp_path / "root", tmp_path / "bin")
    assert image.remap("/tmp/x") == str(tmp_path / "root/tmp/x")
    assert image.remap("--schedule=/tmp/beat") == f"--schedule={tmp_path / 'root/tmp/beat'}"
    assert image.remap("/srv:/tmp") == f"{tmp_path / 'root/srv'}:{tmp_path / 'root/tmp'}"
    assert image.remap("/proc/self") == "/proc/self"
    assert image.remap("default,bulk") == "default,bulk"


def test_a_copy_of_a_file_missing_from_the_context_is_a_problem(tmp_path: Path) -> None:
    context = _context(tmp_path)
    (context / "Dockerfile").write_text(DOCKERFILE.replace("COPY app/ /srv/app/", "COPY missing/ /srv/app/"))
    image = build_image(context, "Dockerfile", tmp_path / "root", tmp_path / "bin")
    assert image.problems == ["COPY missing/: not in the build context context"]
