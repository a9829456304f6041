#!/usr/bin/env python3
"""A ringkv client written from the protos alone, following README "Errors and retries".

It generates its gRPC stubs from proto/ at start (grpcio-tools), talks to a router, and shows
what a client in any language must do:

- every write carries a 16-byte request id, the same on every retry of that write;
- UNAVAILABLE without OUTCOME_UNKNOWN means "not applied": retry after RetryInfo's delay;
- OUTCOME_UNKNOWN (or the client's own deadline firing mid-write) means "maybe applied":
  retry with the same request id, which the shard answers with the first outcome;
- errors are read from the standard rich error model (google.rpc.ErrorInfo, RetryInfo,
  BadRequest), not from ringkv-specific metadata;
- leases (etcd's model) through the routers' `Lease` service (lease.proto): grant, attach a
  key with `Put(lease=...)`, keep alive over the bidirectional stream, time-to-live,
  revoke — nothing of the lease algorithm is re-implemented here.

Run `examples/python/install-deps.sh` once, then:

    target/python-venv/bin/python examples/python/ringkv_example.py --router 127.0.0.1:PORT \
        [--ca CA.pem --cert CLIENT.pem --key CLIENT.key] [--prefix demo/]

Each step prints one JSON line (`{"step": ..., ...}`); the exit code is 0 when every step
behaved as the contract says, 1 otherwise.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import uuid

import grpc
from grpc_status import rpc_status
from google.rpc import error_details_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.join(HERE, "..", "..", "proto", "proto")
PROTOS = ["ringkv/v1/kv.proto", "ringkv/v1/lease.proto"]

# Bounds of the retry loop: attempts and total time per write.
MAX_ATTEMPTS = 8
WRITE_BUDGET_S = 20.0
ATTEMPT_TIMEOUT_S = 5.0
# The example lease's TTL, and how long it is kept alive (past the TTL, to show it lives on).
LEASE_TTL_MS = 2000
KEEP_ALIVE_FOR_S = 3.0


def generate_stubs():
    """Compiles the protos into a temporary directory and imports the kv module."""
    from grpc_tools import protoc
    import grpc_tools

    out = tempfile.mkdtemp(prefix="ringkv-py-")
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}"]
    if protoc.main(args + PROTOS) != 0:
        raise SystemExit("generating the stubs from proto/ failed")
    sys.path.insert(0, out)
    from ringkv.v1 import kv_pb2, kv_pb2_grpc, lease_pb2, lease_pb2_grpc  # noqa: E402

    return kv_pb2, kv_pb2_grpc, lease_pb2, lease_pb2_grpc


class Details:
    """The rich error details of a failed call (google.rpc.Status in the trailers)."""

    def __init__(self, error):
        self.code = error.code()
        self.message = error.details()
        self.reason = None
        self.metadata = {}
        self.retry_delay_s = None
        self.field_violations = []
        self.request_id = None
        status = rpc_status.from_call(error)
        if status is None:
            return
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                self.reason = info.reason
                self.metadata = dict(info.metadata)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                self.retry_delay_s = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                self.field_violations = [(v.field, v.description) for v in bad.field_violations]
            elif detail.Is(error_details_pb2.RequestInfo.DESCRIPTOR):
                info = error_details_pb2.RequestInfo()
                detail.Unpack(info)
                self.request_id = info.request_id

    def as_dict(self):
        return {
            "code": self.code.name,
            "reason": self.reason,
            "metadata": self.metadata,
            "retry_delay_s": self.retry_delay_s,
            "field_violations": self.field_violations,
            "request_id": self.request_id,
        }


class OutcomeUnknown(Exception):
    """A write that may or may not have been applied, after every allowed retry."""


# Codes with which a router says the write was not applied (with or without details).
DEFINITE = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def maybe_applied(details):
    """Whether the failed attempt may have applied the write: the router said so
    (OUTCOME_UNKNOWN), or nothing says it did not — no router answer at all (a connection
    that broke after the request left, our own deadline) or an error that is not one of
    the router's definite ones (INTERNAL, UNKNOWN, DATA_LOSS, ...)."""
    if details.reason == "OUTCOME_UNKNOWN":
        return True
    if details.code in DEFINITE:
        return False
    # UNAVAILABLE or DEADLINE_EXCEEDED with a router reason: not applied (a write that may
    # have been is OUTCOME_UNKNOWN); without one, nobody knows.
    return details.reason is None or details.code not in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )


def write(call, request, attempts_log=None, first_timeout_s=ATTEMPT_TIMEOUT_S):
    """Sends a write with the retry contract: the same request id on every attempt; a retry
    where RetryInfo says it is safe, or where the attempt may have applied (then only the
    same request id makes it safe); "maybe applied" is sticky and never reported as a
    failure. Returns the reply; raises grpc.RpcError for a definite failure and
    OutcomeUnknown when the outcome could not be settled within the budget."""
    if not request.request_id:
        request.request_id = uuid.uuid4().bytes
    ambiguous = False
    deadline = time.monotonic() + WRITE_BUDGET_S
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return call(request, timeout=first_timeout_s if attempt == 1 else ATTEMPT_TIMEOUT_S)
        except grpc.RpcError as error:
            details = Details(error)
            if attempts_log is not None:
                attempts_log.append(details.as_dict())
            unknown = maybe_applied(details)
            ambiguous = ambiguous or unknown
            if details.retry_delay_s is None and not unknown:
                if ambiguous:
                    # An earlier attempt may have applied: only a success settles it.
                    raise OutcomeUnknown(details.message)
                raise
            delay = details.retry_delay_s if details.retry_delay_s is not None else 0.1
            if time.monotonic() + delay >= deadline or attempt == MAX_ATTEMPTS:
                if ambiguous:
                    raise OutcomeUnknown(details.message)
                raise
            time.sleep(delay)
    raise OutcomeUnknown("no attempt left")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--router", required=True, help="host:port of a router")
    parser.add_argument("--ca", help="the cluster CA (PEM); with --cert/--key for mutual TLS")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--prefix", default="py-example/")
    args = parser.parse_args()

    kv_pb2, kv_pb2_grpc, lease_pb2, lease_pb2_grpc = generate_stubs()
    if args.ca:
        with open(args.ca, "rb") as ca, open(args.cert, "rb") as cert, open(args.key, "rb") as key:
            credentials = grpc.ssl_channel_credentials(ca.read(), key.read(), cert.read())
        channel = grpc.secure_channel(args.router, credentials)
    else:
        channel = grpc.insecure_channel(args.router)
    stub = kv_pb2_grpc.KvStub(channel)
    leases = lease_pb2_grpc.LeaseStub(channel)
    ok = True

    def report(step, passed, **fields):
        nonlocal ok
        ok = ok and passed
        print(json.dumps({"step": step, "ok": passed, **fields}), flush=True)

    key = (args.prefix + "greeting").encode()
    request_id = uuid.uuid4().bytes

    # 1. A write with its request id.
    attempts = []
    put = kv_pb2.PutRequest(key=key, value=b"hello", request_id=request_id)
    first = write(stub.Put, put, attempts)
    report("put", first.version > 0, version=first.version, failed_attempts=len(attempts))

    # 2. The same write sent again (as after a lost reply): applied once, first outcome.
    again = write(stub.Put, kv_pb2.PutRequest(key=key, value=b"hello", request_id=request_id))
    report("retry_same_id", again.version == first.version, version=again.version)

    # 3. Another request under that id: refused, nothing written.
    try:
        stub.Put(kv_pb2.PutRequest(key=key, value=b"other", request_id=request_id), timeout=ATTEMPT_TIMEOUT_S)
        report("reused_id", False, error="accepted")
    except grpc.RpcError as error:
        details = Details(error)
        report(
            "reused_id",
            details.code == grpc.StatusCode.INVALID_ARGUMENT
            and details.reason == "REQUEST_ID_REUSED"
            and details.retry_delay_s is None
            and details.request_id == request_id.hex(),
            **details.as_dict(),
        )

    # 4. A linearizable read sees the first write.
    got = stub.Get(kv_pb2.GetRequest(key=key), timeout=ATTEMPT_TIMEOUT_S)
    report("get", got.found and got.value == b"hello" and got.version == first.version, version=got.version)

    # 5. Bad input names its field and is not retryable.
    try:
        stub.Put(kv_pb2.PutRequest(key=b"", value=b"x", request_id=uuid.uuid4().bytes), timeout=ATTEMPT_TIMEOUT_S)
        report("bad_field", False, error="accepted")
    except grpc.RpcError as error:
        details = Details(error)
        report(
            "bad_field",
            details.code == grpc.StatusCode.INVALID_ARGUMENT
            and details.reason == "BAD_FIELD"
            and [field for field, _ in details.field_violations] == ["key"]
            and details.retry_delay_s is None,
            **details.as_dict(),
        )

    # 6. Compare-and-swap by version, retried under its own request id.
    cas = write(
        stub.CompareAndSwap,
        kv_pb2.CompareAndSwapRequest(key=key, expected_version=first.version, new_value=b"hello again"),
    )
    report("cas", cas.succeeded and cas.new_version > first.version, new_version=cas.new_version)

    # 7. Our own deadline fires on the first attempt (it may or may not have reached the
    # shard): the write is retried under its request id and applied once.
    attempts = []
    late = kv_pb2.PutRequest(key=(args.prefix + "late").encode(), value=b"once")
    done = write(stub.Put, late, attempts, first_timeout_s=0.000001)
    got = stub.Get(kv_pb2.GetRequest(key=late.key), timeout=ATTEMPT_TIMEOUT_S)
    report(
        "own_deadline_retry",
        done.version > 0
        and len(attempts) >= 1
        and attempts[0]["code"] == "DEADLINE_EXCEEDED"
        and got.value == b"once"
        and got.version == done.version,
        version=done.version,
        failed_attempts=len(attempts),
    )

    # 8. An ordered scan of the example's keys across every shard.
    for i in range(5):
        write(stub.Put, kv_pb2.PutRequest(key=(args.prefix + f"k{i}").encode(), value=str(i).encode()))
    scan = stub.Scan(kv_pb2.ScanRequest(start=(args.prefix + "k").encode(), end=(args.prefix + "l").encode(), limit=100), timeout=ATTEMPT_TIMEOUT_S)
    keys = [entry.key.decode() for entry in scan.entries]
    report("scan", keys == [args.prefix + f"k{i}" for i in range(5)], keys=keys)

    # 9. Leases: grant one under a request id (the lease's id derives from it, so a retry
    # after a lost answer answers the same lease: lease.proto's retry contract), attach a key
    # to it with a put.
    grant = lease_pb2.LeaseGrantRequest(ttl_ms=LEASE_TTL_MS, request_id=uuid.uuid4().bytes)
    granted = write(leases.LeaseGrant, grant)
    retried = leases.LeaseGrant(grant, timeout=ATTEMPT_TIMEOUT_S)
    session = (args.prefix + "session").encode()
    attached = stub.Put(kv_pb2.PutRequest(key=session, value=b"me", lease=granted.id), timeout=ATTEMPT_TIMEOUT_S)
    status = leases.LeaseTimeToLive(
        lease_pb2.LeaseTimeToLiveRequest(id=granted.id, keys=True), timeout=ATTEMPT_TIMEOUT_S
    )
    report(
        "lease_attach",
        granted.id != 0 and attached.version > 0 and list(status.keys) == [session]
        and status.granted_ttl_ms == LEASE_TTL_MS and retried.id == granted.id,
        lease=f"{granted.id:016x}",
        retried_grant=f"{retried.id:016x}",
        keys=[key.decode() for key in status.keys],
    )

    # 10. Keep it alive over the stream for longer than its TTL: the key stays.
    answers = keep_alive(leases, lease_pb2, granted.id, KEEP_ALIVE_FOR_S)
    got = stub.Get(kv_pb2.GetRequest(key=session), timeout=ATTEMPT_TIMEOUT_S)
    report(
        "lease_keep_alive",
        len(answers) >= 3 and all(answer.ttl_ms == LEASE_TTL_MS for answer in answers) and got.found,
        answers=len(answers),
        key_found=got.found,
    )

    # 11. Revoke it: the key goes with it, and a keep-alive now answers TTL 0 (as etcd's).
    revoked = leases.LeaseRevoke(lease_pb2.LeaseRevokeRequest(id=granted.id), timeout=ATTEMPT_TIMEOUT_S)
    got = stub.Get(kv_pb2.GetRequest(key=session), timeout=ATTEMPT_TIMEOUT_S)
    after = keep_alive(leases, lease_pb2, granted.id, 0)
    report(
        "lease_revoke",
        revoked.deleted_keys == 1 and not got.found and [answer.ttl_ms for answer in after] == [0],
        deleted_keys=revoked.deleted_keys,
    )

    # 12. A TTL out of range: INVALID_ARGUMENT naming the field, not retryable.
    try:
        leases.LeaseGrant(lease_pb2.LeaseGrantRequest(ttl_ms=10), timeout=ATTEMPT_TIMEOUT_S)
        report("lease_bad_ttl", False, error="accepted")
    except grpc.RpcError as error:
        details = Details(error)
        report(
            "lease_bad_ttl",
            details.code == grpc.StatusCode.INVALID_ARGUMENT
            and [field for field, _ in details.field_violations] == ["ttl_ms"]
            and details.retry_delay_s is None,
            **details.as_dict(),
        )

    return 0 if ok else 1


def keep_alive(leases, lease_pb2, lease_id, for_s):
    """Keeps `lease_id` alive over one LeaseKeepAlive stream for `for_s` seconds, a
    keep-alive every third of its TTL (as etcd's clients do), and answers every answer; with
    `for_s` 0, one keep-alive."""

    def requests():
        end = time.monotonic() + for_s
        while True:
            yield lease_pb2.LeaseKeepAliveRequest(id=lease_id)
            if time.monotonic() >= end:
                return
            # The keep-alive interval (pacing, not a wait for a condition).
            time.sleep(LEASE_TTL_MS / 3000)

    return list(leases.LeaseKeepAlive(requests(), timeout=for_s + ATTEMPT_TIMEOUT_S))


if __name__ == "__main__":
    sys.exit(main())
