"""Summarise a py-spy ``--format raw`` profile (collapsed stacks): where the time goes.

    python tests/bench/profile_report.py tests/bench/out/profile-b2-2000.txt [--top 25]

Prints, per process and thread group, the functions with the most samples on top of the
stack (self) and anywhere in the stack (inclusive), as percentages of that group's samples.
The raw file also loads in any flame-graph viewer (speedscope, inferno, flamegraph.pl).
"""

from __future__ import annotations

import collections
import re
import sys
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("site-packages/", "pagestream/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "pagestream/":
                path = "pagestream/" + path
            break
    return f"{m.group('func')} ({path})"


def _group(frames: list[str]) -> str:
    """Which process/thread a stack belongs to (py-spy puts process and thread first)."""
    head = frames[0] if frames else "?"
    thread = frames[1] if len(frames) > 1 and frames[1].startswith("thread") else ""
    text = " ".join(frames)
    if "pagestream/child.py" in text or "pagestream.child" in head:
        return "extraction child"
    if "store.py" in text and "_write_loop" in text:
        return "server: store writer thread"
    if "concurrent/futures/thread.py" in text or "_worker (concurrent" in text:
        return "server: thread pool (store reads, to_thread)"
    return "server: event loop" + ("" if not thread else "")


def report(path: Path, top: int = 25) -> str:
    groups: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    inclusive: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    totals: collections.Counter[str] = collections.Counter()
    idle = collections.Counter[str]()
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        group = _group(frames)
        code = [f for f in frames if "(" in f]
        if not code:
            continue
        totals[group] += count
        leaf = _short(code[-1])
        if any(w in leaf for w in ("select (", "poll (", "_run_once (", "wait (threading", "acquire", "get (queue")):
            idle[group] += count
        groups[group][leaf] += count
        for f in set(_short(f) for f in code):
            inclusive[group][f] += count
    out = []
    grand = sum(totals.values())
    for group, total in totals.most_common():
        out.append(f"\n## {group}: {total} samples ({100 * total / grand:.1f} % of all)")
        out.append("   top of stack (self %):")
        for func, n in groups[group].most_common(top):
            out.append(f"   {100 * n / total:5.1f} %  {func}")
        out.append("   anywhere in stack (inclusive %):")
        for func, n in inclusive[group].most_common(top):
            out.append(f"   {100 * n / total:5.1f} %  {func}")
    return "\n".join(out)


if __name__ == "__main__":
    args = sys.argv[1:]
    n = 25
    if "--top" in args:
        i = args.index("--top")
        n = int(args[i + 1])
        del args[i:i + 2]
    for a in args:
        print(f"# {a}")
        print(report(Path(a), n))
