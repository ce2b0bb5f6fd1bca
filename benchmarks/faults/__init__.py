"""The standing fault campaign of issue 14: live federations under a stranger's attacks and crashes.

``python -m benchmarks.faults`` runs small federations on the embedded digits through clipfl's CLI
only (``python -m clipfl.server --events --run-dir`` and ``python -m clipfl.client``), in each
``--secagg`` mode, once clean and once under each attack, and writes ``results.json`` and
``report.md``. The attacker is raw ZeroMQ (pyzmq) plus the protocol's public codec
(``clipfl.wire``, ``clipfl.messages``), which is what anyone who reads the protocol can use.

Modules: ``payloads`` (what is sent), ``stranger`` (the attacker's sockets and tally), ``sniff``
(routing ids read off loopback), ``attacks`` (1-6), ``kills`` (7, 8), ``federation`` (the processes),
``campaign`` (runs and rows), ``report`` (the table), ``cli``.
"""

from benchmarks.faults.campaign import Case, memory_allowance, run_case, run_mode
from benchmarks.faults.cli import ATTACKS, BUDGETS, build_parser, main, plan
from benchmarks.faults.federation import FederationSpec, LiveFederation, peak_rss
from benchmarks.faults.payloads import KILLER, fuzz_message, structured_malformed
from benchmarks.faults.report import render_markdown, verdicts
from benchmarks.faults.sniff import identities_in

__all__ = [
    "ATTACKS",
    "BUDGETS",
    "KILLER",
    "Case",
    "FederationSpec",
    "LiveFederation",
    "build_parser",
    "fuzz_message",
    "identities_in",
    "main",
    "memory_allowance",
    "peak_rss",
    "plan",
    "render_markdown",
    "run_case",
    "run_mode",
    "structured_malformed",
    "verdicts",
]
