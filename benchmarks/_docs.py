"""One benchmark script's section of docs/benchmarks.md: replaced (or appended) in place, every other section left
as it is, the file written atomically."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"


def write_section(heading: str, body: str, path: Path = BENCHMARKS_MD) -> Path:
    """Make the section that starts with the line `heading` (up to the next ``## `` heading or the end) read
    `heading`, a blank line and `body` (which may itself start with `heading`); append it when there is none."""

    from benchmark.run.run_dir import write_bytes_atomic

    body = body.strip("\n")
    if body.startswith(heading):
        body = body[len(heading):].lstrip("\n")
    section = f"{heading}\n\n{body}\n"
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmarks\n\nEvery performance figure with the command that produced it.\n"
    start = text.find(f"{heading}\n") if text.startswith(f"{heading}\n") else text.find(f"\n{heading}\n") + 1
    if start <= 0 and not text.startswith(f"{heading}\n"):
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + section + ("\n" + text[end + 1:] if end >= 0 else "")
    write_bytes_atomic(path, (text.rstrip("\n") + "\n").encode())
    return path
