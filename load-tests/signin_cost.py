#!/usr/bin/env python3
"""What sign-in costs per request: QIDO latency of an archive without sign-in and of one that
requires bearer tokens, same data, same settings otherwise, side by side.

Starts the OpenID Provider of the tests (tests/support/oidc.py: oidc-provider under Node.js;
`make oidc-provider` installs it). Each round then starts two fresh `pacs serve` (temporary
folders, free ports, the second with the provider's PACS_OIDC_* settings), stores the same
generated studies in both with STOW-RS, warms both up, and times each query against each
archive in blocks of `--requests` GETs over one keep-alive httpx client: one at a time
(latency), then `--concurrency` in flight. Which archive goes first alternates from block to
block and from round to round. The sign-in archive gets a real access token from the
provider's token endpoint (client credentials, pacs:read, RS256 unless `--alg ES256`), fresh
for each block and reused within it, as a viewer or service reuses its token until it expires.

The table shows medians over rounds, and the difference "with minus without": per round (the
two blocks of a pair run back to back), then the median of the rounds. `--control` also sends
the token to the archive without sign-in, which ignores it: what the token's bytes alone cost.
Every answer is checked (status and content) after its block, so that checking takes no time
from the timed requests.

Then `TokenVerifier.principal()` (what the sign-in middleware calls: verify + claims ->
Principal) is timed in process with its keys cached, for an RS256 and an ES256 token, step by
step, so that the difference above is explained.

    .venv/bin/python load-tests/signin_cost.py --rounds 11 --requests 150 --control --json s.json

Run it from the repository (any working directory): tests/support is found next to load-tests.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The OpenID Provider of the tests is in tests/support, which is not installed with `app`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import compare_orthanc as compare
import httpx
import servers
import stow_qido_wado as workload
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jwt
from starlette.types import Message, Receive, Scope, Send

from app.auth.tokens import OidcConfig, TokenVerifier, principal_from_claims, unverified_header
from app.web.signin import SignInMiddleware
from tests.support import oidc

REPO = Path(__file__).resolve().parent.parent
WITHOUT, WITH = "without", "with"  # sign-in
# --control: the archive without sign-in, sent the same token anyway (its bytes, not checked).
IGNORED = "token ignored"
READ = ("pacs:read",)
JSON_ACCEPT = workload.JSON_ACCEPT


@dataclass(frozen=True)
class Query:
    key: str
    label: str
    path: Callable[[int], str]  # the path of the i-th request of a block
    check: Callable[[int, Any], str | None]  # what is wrong with the i-th answer, or None


def queries(corpus: workload.Corpus) -> list[Query]:
    studies = corpus.studies
    series: dict[str, list[str]] = {}
    per_series: dict[str, int] = {}
    for inst in corpus.instances:
        if inst.series not in series.setdefault(inst.study, []):
            series[inst.study].append(inst.series)
        per_series[inst.series] = per_series.get(inst.series, 0) + 1
    pairs = [(s, se) for s in studies for se in series[s]]
    limit = 25

    def study(i: int) -> str:
        return studies[i % len(studies)]

    def count(expected: int) -> Callable[[int, Any], str | None]:
        def check(_: int, answer: Any) -> str | None:
            return None if len(answer) == expected else f"{len(answer)} results, not {expected}"

        return check

    def that_study(i: int, answer: Any) -> str | None:
        found = [r.get("0020000D", {}).get("Value", [None])[0] for r in answer]
        return None if found == [study(i)] else f"found {found}, not [{study(i)}]"

    def metadata(i: int, answer: Any) -> str | None:
        expected = per_series[pairs[i % len(pairs)][1]]
        return None if len(answer) == expected else f"{len(answer)} instances, not {expected}"

    # `*` is sent raw, as stow_qido_wado.py does (legal in a query, RFC 3986 sub-delims).
    return [
        Query("studies", f"/studies?limit={limit}", lambda i: f"/studies?limit={limit}",
              count(min(limit, len(studies)))),
        Query("name", "/studies?PatientName=*X*",
              lambda i: f"/studies?PatientName=*{corpus.patient_keys[study(i)]}*", that_study),
        Query("series", "/studies/{s}/series", lambda i: f"/studies/{study(i)}/series",
              count(corpus.series_per_study)),
        Query("metadata", "/studies/{s}/series/{se}/metadata",
              lambda i: "/studies/{}/series/{}/metadata".format(*pairs[i % len(pairs)]),
              metadata),
    ]  # fmt: skip


@dataclass
class Block:
    """`requests` GETs of one query against one archive, `in_flight` at a time."""

    round: int
    archive: str
    query: str
    in_flight: int
    phase: workload.Phase
    client_cpu: float = 0.0
    foreign_cpu: float = 0.0  # CPU seconds used by the rest of the machine meanwhile

    def figures(self) -> dict[str, float]:
        p = self.phase
        n = len(p.latencies) or 1
        return {
            "p50_ms": p.percentile(0.5),
            "p95_ms": p.percentile(0.95),
            "p99_ms": p.percentile(0.99),
            "mean_ms": statistics.fmean(p.latencies) * 1000 if p.latencies else math.nan,
            "req_per_s": p.rate,
            "server_cpu_ms_per_req": (p.server_cpu or 0.0) / n * 1000,
            "client_cpu_ms_per_req": self.client_cpu / n * 1000,
            "foreign_cpu_share": self.foreign_cpu / p.seconds if p.seconds else math.nan,
            "seconds": p.seconds,
        }


@dataclass
class Archive:
    name: str
    server: servers.Server
    client: httpx.AsyncClient
    # A fresh access token with these scopes from the provider (sign-in archive only).
    token: Callable[[Sequence[str]], str] | None = None

    def sign_in(self, *scopes: str) -> None:
        if self.token is not None:
            self.client.headers["Authorization"] = f"Bearer {self.token(scopes or READ)}"


async def run_block(
    archive: Archive, query: Query, requests: int, in_flight: int, number: int
) -> Block:
    archive.sign_in()
    latencies = [math.nan] * requests
    answers: list[tuple[int, bytes]] = [(0, b"")] * requests
    indexes = itertools.count()

    async def worker() -> None:
        while (i := next(indexes)) < requests:
            path = query.path(i)
            start = time.perf_counter()
            response = await archive.client.get(path)
            latencies[i] = time.perf_counter() - start
            answers[i] = (response.status_code, response.content)

    server, busy0, own0 = archive.server, servers.busy_seconds(), servers.own_seconds()
    cpu0, start = server.cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    seconds = time.perf_counter() - start
    server_cpu, client_cpu = server.cpu_seconds() - cpu0, servers.own_seconds() - own0
    phase = workload.Phase(query.key, query.label, latencies, seconds=seconds)
    phase.server_cpu = server_cpu
    foreign = max(0.0, servers.busy_seconds() - busy0 - server_cpu - client_cpu)
    for i, (status, body) in enumerate(answers):
        problem = f"HTTP {status} {body[:200]!r}" if status != 200 else None
        problem = problem or query.check(i, json.loads(body))
        if problem:
            phase.errors.append(f"archive {archive.name!r}, GET {query.path(i)}: {problem}")
    return Block(number, archive.name, query.key, in_flight, phase, client_cpu, foreign)


async def store(archive: Archive, corpus: workload.Corpus, in_flight: int = 4) -> None:
    archive.sign_in("pacs:read", "pacs:write")

    def job(inst: workload.Instance) -> Callable[[], Coroutine[Any, Any, int]]:
        async def send() -> int:
            content_type, body = workload.multipart(inst.data)
            response = await archive.client.post(
                "/studies", content=body, headers={"Content-Type": content_type}
            )
            workload.check(response, f"STOW to the archive {archive.name!r}")
            return len(inst.data)

        return send

    phase = workload.Phase("stow", "STOW-RS")
    await workload.run_phase(phase, [job(i) for i in corpus.instances], in_flight)
    if phase.errors:
        raise workload.Failure(phase.errors[0])


async def check_sign_in(archive: Archive) -> None:
    """That the sign-in archive refuses a request without a token and the other answers it:
    else the comparison would be of two archives without sign-in."""
    async with httpx.AsyncClient(base_url=archive.server.url) as anonymous:
        status = (await anonymous.get("/studies?limit=1")).status_code
    expected = 401 if archive.name == WITH else 200
    if status != expected:
        raise workload.Failure(f"archive {archive.name!r}: {status} without a token")


def order(names: Sequence[str], number: int, index: int) -> list[str]:
    """The order of the `index`-th group of blocks of round `number`: rotated from group to
    group and round to round, so that each archive goes first as often as the others."""
    shift = (number + index) % len(names)
    return [*names[shift:], *names[:shift]]


async def measure_round(
    archives: dict[str, Archive],
    corpus: workload.Corpus,
    args: argparse.Namespace,
    number: int,
) -> list[Block]:
    names = list(archives)
    for name in order(names, number, 0):
        if name != IGNORED:  # the same archive as WITHOUT
            await store(archives[name], corpus)
    for name in order(names, number, 0):
        await check_sign_in(archives[name])
        # Warm-up: every query, with every connection of the pool opened.
        for query in queries(corpus):
            block = await run_block(archives[name], query, args.warmup, args.concurrency, number)
            if block.phase.errors:
                raise workload.Failure(block.phase.errors[0])
    blocks = []
    plan = [(q, n) for n in (1, args.concurrency) for q in queries(corpus)]
    for index, (query, in_flight) in enumerate(plan):
        for name in order(names, number, index):
            block = await run_block(archives[name], query, args.requests, in_flight, number)
            blocks.append(block)
            if block.phase.errors:
                raise workload.Failure(block.phase.errors[0])
    return blocks


def run_round(
    provider: oidc.OpenIdProvider, corpus: workload.Corpus, args: argparse.Namespace, number: int
) -> list[Block]:
    """Two fresh archives (started in alternating order; the same settings but sign-in),
    the corpus stored in both, every query timed against both (and, with --control, against
    the one without sign-in sent the token anyway)."""
    print(f"== round {number}", file=sys.stderr, flush=True)
    env: dict[str, dict[str, str]] = {WITHOUT: {}, WITH: provider.archive_env()}
    names = [WITHOUT, WITH, IGNORED] if args.control else [WITHOUT, WITH]

    def token(scopes: Sequence[str]) -> str:
        return provider.token(scopes=scopes)

    async def run(started: dict[str, servers.Server]) -> list[Block]:
        limits = httpx.Limits(max_connections=args.concurrency)
        headers = {"Accept": JSON_ACCEPT, "Accept-Encoding": "identity"}
        async with AsyncExitStack() as stack:
            archives = {}
            for name in names:  # one client each: its own keep-alive connections
                server = started[WITHOUT if name == IGNORED else name]
                client = httpx.AsyncClient(
                    base_url=server.url, limits=limits, headers=headers, timeout=args.timeout
                )
                await stack.enter_async_context(client)
                archives[name] = Archive(name, server, client, token if name != WITHOUT else None)
            return await measure_round(archives, corpus, args, number)

    with ExitStack() as stack:
        started = {
            name: stack.enter_context(servers.pacs_server(args.pacs, args.keep, env[name]))
            for name in order([WITHOUT, WITH], number, 0)
        }
        return asyncio.run(run(started))


# -- TokenVerifier in process ---------------------------------------------------------------


def finish(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (the verifier with its keys cached does no I/O)
    without an event loop, so that the timing holds only the verifier's own work."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("the verifier waited for I/O: its keys were not cached")


def b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def public_key_check(provider: oidc.OpenIdProvider, token: str) -> Callable[[], None]:
    """The signature check alone, by `cryptography` (what joserfc calls underneath)."""
    header, payload, signature = token.split(".")
    message, raw = f"{header}.{payload}".encode(), b64decode(signature)
    key = provider.key_set().get_by_kid(unverified_header(token)["kid"]).public_key
    if isinstance(key, ec.EllipticCurvePublicKey):
        half = len(raw) // 2
        der = encode_dss_signature(int.from_bytes(raw[:half]), int.from_bytes(raw[half:]))
        return lambda: key.verify(der, message, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPublicKey):
        return lambda: key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
    raise TypeError(f"not an RSA or EC key: {type(key).__name__}")


async def nothing(scope: Scope, receive: Receive, send: Send) -> None:
    """An ASGI app that answers nothing: what is left is the middleware's own work."""


async def nothing_received() -> Message:
    return {"type": "http.disconnect"}


async def nothing_sent(message: Message) -> None:
    raise AssertionError(f"the middleware answered: {message}")


def time_verifier(
    provider: oidc.OpenIdProvider, alg: str, number: int, repeat: int
) -> dict[str, list[float]]:
    """Microseconds per call of the sign-in middleware and of each step of what it calls, for
    a token signed with `alg`: one figure per repeat (`number` calls each)."""
    if provider.signing_key["alg"] != alg:
        provider.rotate_key(alg)
    token = provider.token(scopes=READ)
    config = OidcConfig(
        issuer=provider.issuer, audience=provider.audience, tenants_claim=oidc.TENANTS_CLAIM
    )
    verifier = TokenVerifier(config)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(verifier.load())  # keys cached from here on: verify() never fetches
    key = provider.key_set().get_by_kid(unverified_header(token)["kid"])
    claims = jwt.decode(token, key, algorithms=[alg]).claims
    registry = verifier._registry  # the verifier's own claims rules
    middleware = SignInMiddleware(nothing, verifier)
    scope = {
        "type": "http",
        "path": "/dicomweb/studies",
        "client": ("127.0.0.1", 50000),
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"accept", JSON_ACCEPT.encode()),
            (b"authorization", f"Bearer {token}".encode()),
        ],
    }
    steps: dict[str, Callable[[], object]] = {
        "SignInMiddleware, an empty app behind it": lambda: finish(
            middleware(dict(scope), nothing_received, nothing_sent)
        ),
        "principal(): all the middleware calls": lambda: finish(
            verifier.principal(token, "127.0.0.1")
        ),
        "verify()": lambda: finish(verifier.verify(token)),
        "verify: JOSE header read": lambda: unverified_header(token),
        "verify: jwt.decode (signature, JSON)": lambda: jwt.decode(token, key, algorithms=[alg]),
        "jwt.decode: public-key check alone": public_key_check(provider, token),
        "verify: claims checked (iss, aud, exp, sub)": lambda: registry.validate(claims),
        "Principal from the claims": lambda: principal_from_claims(config, claims),
    }
    figures: dict[str, list[float]] = {label: [] for label in steps}
    for step in steps.values():
        step()  # warm-up, and proof that it works on this token
    # Repeats outermost: a burst of other work on the machine hits every step alike.
    for _ in range(repeat):
        for label, step in steps.items():
            figures[label].append(timeit.timeit(step, number=number) / number * 1e6)
    loop.run_until_complete(verifier.close())
    loop.close()
    return figures


# -- report ---------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return statistics.median(kept) if kept else math.nan


def http_table(blocks: list[Block], labels: dict[str, str], rounds: int) -> list[list[str]]:
    """Medians over rounds; the differences are paired by round, then their median."""

    def figure(archive: str, query: str, in_flight: int, name: str) -> list[float]:
        return [
            b.figures()[name]
            for b in sorted(blocks, key=lambda b: b.round)
            if (b.archive, b.query, b.in_flight) == (archive, query, in_flight)
        ]

    def diff(query: str, in_flight: int, name: str, archive: str = WITH) -> float:
        pairs = zip(
            figure(archive, query, in_flight, name),
            figure(WITHOUT, query, in_flight, name),
            strict=True,
        )
        return median([w - wo for w, wo in pairs])

    control = any(b.archive == IGNORED for b in blocks)

    rows = [
        ["query", "in flight", "p50 without", "p50 with", "p50 +", "p95 without", "p95 with",
         "p95 +", "p99 without", "p99 with", "req/s without", "req/s with",
         "server CPU + ms/req"]
    ]  # fmt: skip
    if control:
        rows[0] += ["p50 token ignored", "p50 + (ignored)"]
    seen = dict.fromkeys((b.query, b.in_flight) for b in blocks)
    for query, in_flight in sorted(seen, key=lambda k: k[1]):
        row = [labels[query], str(in_flight)]
        for name in ("p50_ms", "p95_ms"):
            row += [
                compare.fmt(median(figure(WITHOUT, query, in_flight, name)), 2),
                compare.fmt(median(figure(WITH, query, in_flight, name)), 2),
                f"{diff(query, in_flight, name):+.2f}",
            ]
        for name, digits in (("p99_ms", 2), ("req_per_s", 0)):
            row += [
                compare.fmt(median(figure(WITHOUT, query, in_flight, name)), digits),
                compare.fmt(median(figure(WITH, query, in_flight, name)), digits),
            ]
        row.append(f"{diff(query, in_flight, 'server_cpu_ms_per_req'):+.2f}")
        if control:
            row += [
                compare.fmt(median(figure(IGNORED, query, in_flight, "p50_ms")), 2),
                f"{diff(query, in_flight, 'p50_ms', IGNORED):+.2f}",
            ]
        rows.append(row)
    rows[0][2] += f" (ms, median of {rounds})"
    return rows


def verifier_table(timings: dict[str, dict[str, list[float]]]) -> list[list[str]]:
    algs = list(timings)
    rows = [["step (µs per call, median of repeats)", *algs]]
    for label in timings[algs[0]]:
        rows.append([label, *(f"{median(timings[a][label]):.1f}" for a in algs)])
    return rows


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=11, help="fresh archive pairs, medians")
    parser.add_argument("--requests", type=int, default=150, help="GETs per timed block")
    parser.add_argument("--warmup", type=int, default=40, help="GETs per query before timing")
    parser.add_argument("--concurrency", type=int, default=8, help="in flight, second pass")
    parser.add_argument("--studies", type=int, default=20, help="studies stored in each")
    parser.add_argument("--series", type=int, default=3, help="series per study")
    parser.add_argument("--instances", type=int, default=120, help="instances in all")
    parser.add_argument(
        "--alg",
        choices=["RS256", "ES256"],
        default="RS256",
        help="signature algorithm of the tokens sent to the archive",
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="also time the archive without sign-in sent the same token (the bytes alone)",
    )
    parser.add_argument("--verify-calls", type=int, default=2000, help="per timeit repeat")
    parser.add_argument("--verify-repeats", type=int, default=7, help="timeit repeats")
    parser.add_argument("--timeout", type=float, default=60.0, help="per request, seconds")
    parser.add_argument("--pacs", default=servers.default_pacs(), help="`pacs` executable")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    parser.add_argument("--json", type=Path, help="also write every figure of every block here")
    args = parser.parse_args(argv)  # fmt: skip
    if args.instances < args.studies * args.series:
        parser.error("--instances must be at least --studies x --series")
    if (
        shutil.which("node") is None
        or not (oidc.RUNNER_DIR / "node_modules" / "oidc-provider" / "package.json").is_file()
    ):
        parser.error(f"the OpenID Provider is not installed: run `make oidc-provider` ({REPO})")

    load_before, started = load(), time.strftime("%Y-%m-%d %H:%M:%S %Z")
    busy0, wall0 = servers.busy_seconds(), time.perf_counter()
    corpus = workload.make_corpus(args.instances, args.studies, args.series)
    labels = {q.key: q.label for q in queries(corpus)}
    blocks: list[Block] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-oidc-") as work,
        oidc.running_provider(Path(work)) as provider,
    ):
        if args.alg != "RS256":
            provider.rotate_key(args.alg, retire=True)
        for number in range(1, args.rounds + 1):
            blocks += run_round(provider, corpus, args, number)
        print("== TokenVerifier in process", file=sys.stderr, flush=True)
        timings = {
            alg: time_verifier(provider, alg, args.verify_calls, args.verify_repeats)
            for alg in ("RS256", "ES256")
        }
    wall = time.perf_counter() - wall0
    machine_cpus = len(os.sched_getaffinity(0))
    busy_share = (servers.busy_seconds() - busy0) / wall
    foreign = sum(b.foreign_cpu for b in blocks) / sum(b.phase.seconds for b in blocks)

    print(
        f"\n{args.studies} studies x {args.series} series, {args.instances} instances in each "
        f"archive; {args.rounds} rounds of {args.requests} GETs per query and archive, one at "
        f"a time then {args.concurrency} in flight, after {args.warmup} warm-up GETs; "
        f"{args.alg} access tokens of the test OpenID Provider; pacs at {servers.revision()}; "
        f"{platform.node()}, {machine_cpus} CPUs, client on the same machine; load average "
        f"{load_before} before, {load()} after; the rest of the machine used "
        f"{foreign:.2f} CPU on average while blocks were timed (all: {busy_share:.2f} CPU "
        f"busy over {wall:.0f} s)\n"
    )
    rows = http_table(blocks, labels, args.rounds)
    compare.print_table(rows)
    print()
    compare.print_table(verifier_table(timings))
    sequential = [r for r in rows[1:] if r[1] == "1"]
    worst = max(float(r[4]) for r in sequential)
    print(
        f"\nsign-in adds at most {worst:.2f} ms to the p50 of a request one at a time "
        f"(target: under 1 ms): {'met' if worst < 1 else 'NOT met'}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "revision": servers.revision(),
                    "date": started,
                    "machine": {"node": platform.node(), "cpus": machine_cpus,
                                "load_before": load_before, "load_after": load(),
                                "foreign_cpu_while_timed": foreign,
                                "busy_cpu_share": busy_share, "seconds": wall},
                    "blocks": [
                        {
                            "round": b.round, "archive": b.archive, "query": labels[b.query],
                            "in_flight": b.in_flight, **b.figures(),
                            "latencies_ms": [round(x * 1000, 4) for x in b.phase.latencies],
                        }
                        for b in blocks
                    ],
                    "http_table": rows,
                    "verifier_us_per_call": timings,
                },
                indent=1,
            )
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
