"""What one reply's SMTP exchange costs the sending process, by client.

The outbox process spends most of its CPU in the SMTP client: four commands and four
answers a reply (MAIL, RCPT, DATA, the message), each a turn of the event loop. This
sends N copies of a reply-sized message over one session to an aiosmtpd sink (a process
of its own) and prints, per message, the instructions the sender executed (valgrind's
callgrind, less a run that only connects: the same on a busy machine as on a quiet one)
and its user and system CPU (``os.times``, best of ``--repeat``), for each way of sending:

- ``outbox``: the outbox's own ``_sendmail``, which holds one deadline a message (at
  commits before it did, under the deadline ``outbox._send_one`` set from 3070087 on);
- ``per-answer``: aiosmtplib with its timeout on each answer, inside ``asyncio.wait_for``,
  as the outbox sent before 3070087;
- ``smtplib``: the standard library's blocking client, for reference.

    python bench/smtp_client.py                   # 300 messages under callgrind, 2,000 timed
    python bench/smtp_client.py --rev 43ec0c6     # the outbox mode of another commit
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from common import (
    add_source_arguments,
    callgrind_instructions,
    machine_note,
    require_valgrind,
    smtp_sink_process,
    source_tree,
    terminate_on_sigterm,
)

MODES = ("outbox", "per-answer", "smtplib")
CHILD = """
import asyncio, inspect, os, smtplib, sys
import aiosmtplib
from mailroute.config import SmtpConfig
from mailroute.mail import outbox

port, count, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
SENDER, RECIPIENT = "servicedesk@example.com", "ivanova@example.org"
LINE = b"=D0=92=D0=B0=D1=88=D0=B5 =D0=BE=D0=B1=D1=80=D0=B0=D1=89=D0=B5=D0=BD=D0=B8=D0=B5\\r\\n"
RAW = (b"From: ServiceDesk <servicedesk@example.com>\\r\\nTo: ivanova@example.org\\r\\n"
       b"Subject: [SD-000001] request registered\\r\\nMessage-ID: <a.SD-000001@example.com>\\r\\n"
       b"MIME-Version: 1.0\\r\\nContent-Type: text/plain; charset=utf-8\\r\\n"
       b"Content-Transfer-Encoding: quoted-printable\\r\\n\\r\\n" + LINE * 30)
smtp = SmtpConfig(host="127.0.0.1", port=port, security="none", timeout=30)
OWN_DEADLINE = "smtp" in inspect.signature(outbox._sendmail).parameters


async def aio() -> tuple[os.times_result, os.times_result]:
    client = await outbox._connect(smtp)
    start = os.times()
    for _ in range(count):
        if mode == "outbox" and OWN_DEADLINE:
            await outbox._sendmail(client, smtp, SENDER, RECIPIENT, RAW)
        elif mode == "outbox":  # 3070087 to 56f8d23: _send_one set the deadline around it
            async with asyncio.timeout(smtp.timeout * 2):
                await outbox._sendmail(client, SENDER, RECIPIENT, RAW)
        else:
            await asyncio.wait_for(client.sendmail(SENDER, [RECIPIENT], RAW), smtp.timeout * 2)
    end = os.times()
    await outbox._quit(client)
    return start, end


def blocking() -> tuple[os.times_result, os.times_result]:
    with smtplib.SMTP("127.0.0.1", port, timeout=smtp.timeout) as client:
        client.ehlo()
        start = os.times()
        for _ in range(count):
            client.sendmail(SENDER, [RECIPIENT], RAW)
        return start, os.times()


start, end = blocking() if mode == "smtplib" else asyncio.run(aio())
print(end.user - start.user, end.system - start.system)
"""


def timed(source_env: dict[str, str], cwd: Path, port: int, count: int,
          mode: str) -> tuple[float, float]:
    """(user, system) CPU seconds of ``count`` sends."""
    done = subprocess.run([sys.executable, "-c", CHILD, str(port), str(count), mode],
                          env=source_env, cwd=cwd, capture_output=True, text=True, check=True)
    user, system = done.stdout.split()
    return float(user), float(system)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="messages under callgrind")
    parser.add_argument("--timed", type=int, default=2000, help="messages timed by os.times")
    parser.add_argument("--repeat", type=int, default=3)
    add_source_arguments(parser)
    args = parser.parse_args()
    require_valgrind()
    terminate_on_sigterm()
    with source_tree(args.live, args.rev) as source:
        env = {**source.env(), "PYTHONHASHSEED": "0"}
        cwd = Path(source.root)
        with smtp_sink_process(env) as (port, _pid):
            counted: dict[str, float] = {}
            for mode in MODES:
                base = callgrind_instructions(["-c", CHILD, str(port), "0", mode], env, cwd,
                                              f"{mode}, connecting only")
                sends = callgrind_instructions(["-c", CHILD, str(port), str(args.n), mode],
                                               env, cwd, f"{mode}, {args.n} messages")
                counted[mode] = (sends - base) / args.n
            cpu: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
            for _ in range(args.repeat):
                for mode in MODES:  # interleaved: the machine's moods fall on all alike
                    cpu[mode].append(timed(env, cwd, port, args.timed, mode))
    print(f"# bench/smtp_client.py: {source.label}; {machine_note()}")
    for mode in MODES:
        user, system = min(cpu[mode], key=sum)
        print(f"{mode:>10}: {counted[mode] / 1e6:.3f} M instructions a message (n={args.n}); "
              f"CPU {user / args.timed * 1e6:.0f} us user + {system / args.timed * 1e6:.0f} us "
              f"system a message (best of {args.repeat}, n={args.timed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
