"""What reading a backlog over IMAP costs the daemon's process: FETCH through ImapSource.

The daemon reads each batch with one ``UID FETCH`` (``mailroute.mail.imap``), on the
process that also stores and decides. This measures that share alone: N generated
letters in a private Dovecot, listed and fetched ``--batch`` at a time exactly as intake
does (``select``, ``list_uids``, ``fetch``), the CPU time of this process and the wall
time per pass, best of ``--repeat``. Nothing is stored or moved, so every pass reads
the same letters.

    python bench/fetch.py                       # 2,000 letters, batches of 100
    python bench/fetch.py --rev 1f7640d         # an earlier commit, to compare
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from common import add_source_arguments, machine_note, source_tree, terminate_on_sigterm
from letters import generate


def measure(account: Any, batch: int, repeat: int) -> tuple[list[tuple[float, float]], int]:
    """(CPU seconds of this process, wall seconds) for each pass; letters read a pass."""
    from mailroute.config import MailboxConfig
    from mailroute.mail.imap import ImapSource

    config = MailboxConfig(host=account.host, port=account.port, security="none",
                           username=account.username, password=account.password)
    passes = []
    read = 0
    for _ in range(repeat):
        source = ImapSource(config)
        try:
            source.select()
            uids = source.list_uids()
            cpu, wall = time.process_time(), time.monotonic()
            read = sum(1 for start in range(0, len(uids), batch)
                       for _ in source.fetch(uids[start : start + batch]))
            passes.append((time.process_time() - cpu, time.monotonic() - wall))
        finally:
            source.close()
        if read != len(uids):
            raise SystemExit(f"read {read} of {len(uids)} letters")
    return passes, read


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100, help="letters a FETCH (batch_size)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    add_source_arguments(parser)
    args = parser.parse_args()
    terminate_on_sigterm()
    with source_tree(args.live, args.rev) as source:
        source.activate()
        from support.dovecot import DovecotServer

        with DovecotServer() as dovecot:
            account = dovecot.new_account()
            letters = [letter.raw for letter in generate(args.n, args.seed)]
            megabytes = sum(map(len, letters)) / 1e6
            with account.client() as imap:
                for start in range(0, len(letters), 200):
                    imap.multiappend("INBOX", letters[start : start + 200])
            del letters
            passes, read = measure(account, args.batch, args.repeat)
    cpu, wall = min(passes)
    print(f"# bench/fetch.py: {source.label}; {machine_note()}")
    print(f"fetch n={read} ({megabytes:.1f} MB) batch={args.batch}: {cpu / read * 1000:.3f} ms "
          f"of CPU a letter (best of {len(passes)}: "
          f"{', '.join(f'{c:.2f}' for c, _w in passes)} s), wall {wall:.2f} s "
          f"({read / wall:.0f} letters/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
