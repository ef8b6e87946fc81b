"""A deterministic repository of N files shaped like a monorepo, built with git fast-import.

Shape (every choice drawn from one seeded random generator, so the same N, seed and
commit count give the same commit ids on any machine):

- a few top-level files (README.md, Makefile, CHANGELOG.md, deps.lock, .gitignore);
- groups apps/, libs/, services/, tools/, each holding packages (``<group>/<name>``, one
  README.md each), about one package per 2,500 files (at least 24 in all); a package's
  files sit 1 to 6 folders deep under src/ and tests/;
- docs/ (Markdown) and third_party/ (vendored code, deep folders);
- many small text files (source, tests, configuration: 100 B to 4 KiB), 1 in 100 binary
  (images and archives of random bytes, 1-16 KiB), and a few large ones (data/, 1-4 MiB,
  one per 100,000 files and at least 3);
- a history: the first commit adds everything; each later commit changes a cluster of
  files of one package (sometimes of two, coupling them), and often CHANGELOG.md or
  deps.lock (hot files), with a few files added on the way.

The result is a bare repository with branch main. Standard library only.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

VERSION = 1  # bump when the shape changes: the cache is keyed by it
GROUPS = ("apps", "libs", "services", "tools")
MODULES = ("core", "api", "model", "util", "store", "net", "auth", "io", "ui", "jobs",
           "cache", "config", "events", "search", "billing", "report")
TEXT_KINDS = ((".py", "def {name}(value):\n    return value + {n}\n"),
              (".ts", "export function {name}(value: number): number {{ return value + {n}; }}\n"),
              (".go", "func {name}(value int) int {{ return value + {n} }}\n"),
              (".yaml", "{name}:\n  weight: {n}\n"),
              (".json", '  "{name}": {n},\n'),
              (".md", "- {name} is step {n} of the procedure.\n"))
BINARY_KINDS = (".png", ".bin", ".gz")
EPOCH = 1_700_000_000
PACKAGE_FILES = 2_500


@dataclass(frozen=True)
class Layout:
    files: list[str]
    packages: list[str]  # <group>/<name>, sorted
    large: frozenset[str]
    binary: frozenset[str]


def package_names(count: int) -> list[str]:
    """``count`` packages spread over the groups: <group>/<module>-<k>."""
    return sorted(f"{GROUPS[i % len(GROUPS)]}/{MODULES[i // len(GROUPS) % len(MODULES)]}-"
                  f"{i // (len(GROUPS) * len(MODULES))}" for i in range(count))


def layout(total: int, rng: random.Random) -> Layout:
    """Every path of the first commit (``total`` of them, sorted)."""
    top = ["README.md", "Makefile", "CHANGELOG.md", "deps.lock", ".gitignore"]
    packages = package_names(max(24, total // PACKAGE_FILES))
    large = [f"data/fixtures/set-{i:03d}.csv" for i in range(max(3, total // 100_000))]
    rest = max(0, total - len(top) - len(large) - len(packages))
    paths = set(top) | set(large) | {f"{p}/README.md" for p in packages}
    binary: set[str] = set()
    counter = 0
    while len(paths) < len(top) + len(large) + len(packages) + rest:
        counter += 1
        path = _random_path(rng, packages, counter)
        if path.endswith(BINARY_KINDS):
            binary.add(path)
        paths.add(path)
    return Layout(sorted(paths), packages, frozenset(large), frozenset(binary))


def _random_path(rng: random.Random, packages: list[str], n: int) -> str:
    roll = rng.random()
    if roll < 0.04:
        where = f"docs/{rng.choice(MODULES)}/{rng.choice(MODULES)}"
        return f"{where}/page{n}.md"
    if roll < 0.12:
        depth = rng.randint(2, 7)
        where = "third_party/" + "/".join(f"v{rng.randrange(12)}" for _ in range(depth))
        return f"{where}/vendored{n}{rng.choice(TEXT_KINDS)[0]}"
    package = rng.choice(packages)
    part = "tests" if rng.random() < 0.25 else "src"
    depth = rng.randint(1, 6)
    folders = "/".join(f"{rng.choice(MODULES)}{rng.randrange(4)}" for _ in range(depth))
    ext = rng.choice(BINARY_KINDS) if rng.random() < 0.01 else rng.choice(TEXT_KINDS)[0]
    return f"{package}/{part}/{folders}/file{n}{ext}"


def content(path: str, version: int, rng: random.Random, lay: Layout) -> bytes:
    if path in lay.large:
        return _large(path, version, rng)
    if path in lay.binary:
        return rng.randbytes(rng.randint(1024, 16 * 1024))
    template = next((t for ext, t in TEXT_KINDS if path.endswith(ext)), TEXT_KINDS[-1][1])
    stem = path.rsplit("/", 1)[-1].split(".")[0].replace("-", "_")
    lines = [template.format(name=f"{stem}_{i}", n=i + version)
             for i in range(rng.randint(2, 60))]
    return f"# {path} (version {version})\n{''.join(lines)}".encode()


def _large(path: str, version: int, rng: random.Random) -> bytes:
    rows = rng.randint(25_000, 100_000)
    seed = rng.randrange(1 << 30)
    body = "".join(f"{i},{(i * 7919 + seed) % 100_003},{path},{version}\n"
                   for i in range(rows))
    return f"id,value,source,version\n{body}".encode()


def history(lay: Layout, commits: int, rng: random.Random) -> Iterator[tuple[str, list[str]]]:
    """Per later commit: its message and the paths it changes (or adds)."""
    by_package: dict[str, list[str]] = {p: [] for p in lay.packages}
    for path in lay.files:
        package = "/".join(path.split("/", 2)[:2])
        if package in by_package and path not in lay.binary:
            by_package[package].append(path)
    added = 0
    for k in range(commits):
        touched = [rng.choice(lay.packages)]
        if rng.random() < 0.3:
            touched.append(rng.choice(lay.packages))
        paths: list[str] = []
        for package in touched:
            own = by_package[package] or [f"{package}/README.md"]
            start = rng.randrange(len(own))
            paths += own[start:start + rng.randint(2, 12)]
            if rng.random() < 0.2:
                added += 1
                paths.append(f"{package}/src/new/added{added}.py")
        paths += [hot for hot, share in (("CHANGELOG.md", 0.6), ("deps.lock", 0.3))
                  if rng.random() < share]
        yield f"change {k + 1}: {' and '.join(touched)}", sorted(set(paths))


def _emit_commit(out: BinaryIO, message: str, when: int,
                 blobs: Iterator[tuple[str, bytes]]) -> None:
    msg = message.encode()
    out.write(b"commit refs/heads/main\n")
    stamp = f"{when} +0000".encode()
    out.write(b"author Big Repo <big@example.invalid> " + stamp + b"\n")
    out.write(b"committer Big Repo <big@example.invalid> " + stamp + b"\n")
    out.write(b"data %d\n%s\n" % (len(msg), msg))
    # (no "from": a commit on a branch this import already wrote continues from its tip)
    for path, data in blobs:
        out.write(b"M 100644 inline " + path.encode() + b"\n")
        out.write(b"data %d\n" % len(data))
        out.write(data)
        out.write(b"\n")
    out.write(b"\n")


def build(dest: Path, files: int, commits: int, seed: int) -> str:
    """Write the repository into ``dest`` (a new folder); return main's commit id."""
    rng = random.Random(seed)
    lay = layout(files, rng)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull)
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(dest)], check=True, env=env)
    importer = subprocess.Popen(["git", "fast-import", "--quiet", "--done"], cwd=dest,
                                stdin=subprocess.PIPE, env=env)
    assert importer.stdin is not None
    with importer.stdin as out:
        _emit_commit(out, "the monorepo as it was imported", EPOCH,
                     ((p, content(p, 0, rng, lay)) for p in lay.files))
        for k, (message, paths) in enumerate(history(lay, commits, rng)):
            _emit_commit(out, message, EPOCH + 3600 * (k + 1),
                         ((p, content(p, k + 1, rng, lay)) for p in paths))
        out.write(b"done\n")
    if importer.wait() != 0:
        raise SystemExit(f"git fast-import failed (exit {importer.returncode}) in {dest}")
    head = subprocess.run(["git", "rev-parse", "main"], cwd=dest, env=env, check=True,
                          capture_output=True, text=True).stdout.strip()
    return head


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or "/var/tmp"
    return Path(base) / "wtr-big-repo"


def cached(files: int, commits: int, seed: int, out: Path | None = None) -> Path:
    """The repository for (files, commits, seed): built once into ``out`` (default: the
    cache folder), then reused. Built beside its place and renamed, so an interrupted
    build leaves no half repository to be reused."""
    dest = out or cache_dir() / f"n{files}-c{commits}-s{seed}-v{VERSION}.git"
    if (dest / "wtr-big-repo.done").is_file():
        return dest
    if dest.exists():
        raise SystemExit(f"{dest} exists and is not a finished big repository; remove it "
                         "or give another --out")
    dest.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        head = build(building / "repo.git", files, commits, seed)
        (building / "repo.git" / "wtr-big-repo.done").write_text(
            f"files {files}\ncommits {commits}\nseed {seed}\nmain {head}\n")
        os.replace(building / "repo.git", dest)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return dest


def packages(repo: Path) -> list[str]:
    """The packages (<group>/<name>) of a repository this module built: the streams of a
    benchmark each own one."""
    out = subprocess.run(["git", "ls-tree", "-d", "--name-only", "main", *(f"{g}/" for g in
                                                                             GROUPS)],
                         cwd=repo, check=True, capture_output=True, text=True).stdout
    return sorted(out.split())
