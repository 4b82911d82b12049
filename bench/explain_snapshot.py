"""`mailroute explain --json` on every letter we have: proof that a refactor changed nothing.

A change that only moves code must not change a single verdict. This takes the explain output
(with SLA due times, at a fixed arrival moment) of the labelled test letters, the shared dev
corpus and 2,000 generated letters, and either writes it to a file or compares it byte for byte
with a file written before the change:

    python bench/explain_snapshot.py --out /tmp/explain-before.jsonl      # on the old tree
    python bench/explain_snapshot.py --compare /tmp/explain-before.jsonl  # on the new tree

It prints the number of letters, a SHA-256 of the whole output, and with --compare the first
letters that differ; it exits 1 when anything differs.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import snapshots
from letters import generate

ROOT = Path(__file__).resolve().parent.parent
RECEIVED_AT = "2026-11-23T09:30:00+03:00"
GENERATED = 2_000


def letter_files(workdir: Path) -> list[Path]:
    """The labelled letters, the dev corpus (when it is beside the checkout) and generated ones."""
    files = sorted((ROOT / "tests" / "letters").glob("*.eml"))
    files += sorted((ROOT.parent / "shared" / "corpus" / "dev").glob("*.eml"))
    for number, letter in enumerate(generate(GENERATED), start=1):
        path = workdir / f"generated-{number:05d}.eml"
        path.write_bytes(letter.raw)
        files.append(path)
    return files


def explain_lines(files: list[Path]) -> list[str]:
    """One line per letter: its name, then the JSON verdict exactly as the CLI prints it."""
    lines: list[str] = []
    mailroute = Path(sys.executable).parent / "mailroute"
    chunk = 200
    for start in range(0, len(files), chunk):
        batch = files[start:start + chunk]
        output = subprocess.run(
            [str(mailroute), "explain", "--json", "--received-at", RECEIVED_AT,
             *map(str, batch)],
            check=True, capture_output=True, text=True, cwd=ROOT,
        ).stdout
        lines.extend(_per_letter(output, batch))
    return lines


def _per_letter(output: str, batch: list[Path]) -> list[str]:
    verdicts = [line for line in output.splitlines() if line.strip()]
    if len(verdicts) != len(batch):
        raise SystemExit(f"explain printed {len(verdicts)} lines for {len(batch)} letters")
    return [f"{path.name}\t{verdict}" for path, verdict in zip(batch, verdicts, strict=True)]


def main() -> int:
    def produce() -> list[str]:
        with tempfile.TemporaryDirectory() as workdir:
            # explain names each file; the temporary folder's name must not count
            return [line.replace(workdir, "GENERATED")
                    for line in explain_lines(letter_files(Path(workdir)))]

    return snapshots.run(__doc__.split("\n\n")[0], "letter", produce)


if __name__ == "__main__":
    raise SystemExit(main())
