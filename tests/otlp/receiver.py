#!/usr/bin/env python3
"""A scriptable OTLP Profiles receiver for testing Hearth's sender.

It serves the official gRPC service (ProfilesService/Export, generated code
from the opentelemetry-proto package) and OTLP/HTTP
(POST /v1development/profiles, protobuf body, optional gzip) on loopback
ports, and behaves as a control file tells it, re-read on every request:

    {"seq": 1, "mode": "unavailable", "times": 2, ...}

Modes (gRPC status / HTTP status):
    ok                  accept (OK / 200)
    unavailable         UNAVAILABLE / 503 (+ Retry-After if "retry_after")
    resource_exhausted  RESOURCE_EXHAUSTED (+ RetryInfo if "retry_delay_ms")
                        / 429 (+ Retry-After if "retry_after")
    http_429            same as resource_exhausted
    invalid             INVALID_ARGUMENT / 400 (aliases: http_400,
                        invalid_argument)
    partial_success     accept with partial_success.rejected_profiles =
                        "rejected" and error_message = "message"
    hang                never answer (for "hang_s" seconds, default 30, or
                        until the client gives up)

"times": apply the mode to that many requests of this "seq", then accept.
Without a control file every request is accepted. "down" is done by the test
stopping this process.

Every request appends one JSON line to the output file: when, transport,
the mode applied, the request headers, its encoding, its size, and for a
request that decoded: per ResourceProfiles its attributes and sample totals,
the dictionary table sizes and the result of checking the protocol's
invariants (zero value at index 0 of every table, string_table[0] == "",
every index in range, no duplicate table entries). These checks are written
here, against the official Python classes, independently of the sender.
"""

import argparse
import gzip
import http.server
import json
import os
import signal
import ssl
import sys
import threading
import time
from concurrent import futures

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry.proto.collector.profiles.v1development import (
    profiles_service_pb2 as svc_pb2,
)
from opentelemetry.proto.collector.profiles.v1development import (
    profiles_service_pb2_grpc as svc_grpc,
)
from opentelemetry.proto.profiles.v1development import profiles_pb2

HTTP_PATH = "/v1development/profiles"


class Control:
    """Reads the control file per request and counts uses per "seq"."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.used = {}

    def next(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                ctl = json.load(f)
        except (OSError, ValueError):
            ctl = {}
        mode = ctl.get("mode", "ok")
        times = ctl.get("times")
        seq = ctl.get("seq", 0)
        with self.lock:
            n = self.used.get(seq, 0)
            self.used[seq] = n + 1
        if times is not None and n >= times:
            mode = "ok"
        aliases = {
            "http_429": "resource_exhausted",
            "http_400": "invalid",
            "invalid_argument": "invalid",
        }
        ctl["mode"] = aliases.get(mode, mode)
        return ctl


class Output:
    def __init__(self, path):
        self.lock = threading.Lock()
        self.f = open(path, "a", encoding="utf-8")

    def write(self, record):
        line = json.dumps(record, sort_keys=True)
        with self.lock:
            self.f.write(line + "\n")
            self.f.flush()


def any_value_str(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind in ("string_value", "bool_value", "int_value", "double_value"):
        return str(getattr(v, kind))
    return str(getattr(v, kind)).strip()


def check_dictionary(data):
    """Checks the invariants of ProfilesData; returns (sizes, errors)."""
    d = data.dictionary
    errors = []
    tables = {
        "mapping_table": (d.mapping_table, profiles_pb2.Mapping),
        "location_table": (d.location_table, profiles_pb2.Location),
        "function_table": (d.function_table, profiles_pb2.Function),
        "link_table": (d.link_table, profiles_pb2.Link),
        "attribute_table": (d.attribute_table, profiles_pb2.KeyValueAndUnit),
        "stack_table": (d.stack_table, profiles_pb2.Stack),
    }
    sizes = {name: len(t) for name, (t, _) in tables.items()}
    sizes["string_table"] = len(d.string_table)

    # Index 0 holds the zero value.
    for name, (table, cls) in tables.items():
        if len(table) == 0:
            errors.append(f"{name} is empty (no zero value at index 0)")
        elif table[0] != cls():
            errors.append(f"{name}[0] is not the zero value")
    if len(d.string_table) == 0 or d.string_table[0] != "":
        errors.append('string_table[0] is not ""')

    # No duplicates (byte-identical deterministic encodings).
    for name, (table, _) in tables.items():
        keys = [m.SerializeToString(deterministic=True) for m in table]
        if len(set(keys)) != len(keys):
            errors.append(f"{name} has {len(keys) - len(set(keys))} duplicate entries")
    if len(set(d.string_table)) != len(d.string_table):
        errors.append("string_table has duplicate entries")

    def in_range(what, idx, table_name):
        n = sizes[table_name]
        if idx < 0 or idx >= n:
            errors.append(f"{what}: index {idx} out of range for {table_name} (len {n})")

    for i, m in enumerate(d.mapping_table):
        in_range(f"mapping[{i}].filename_strindex", m.filename_strindex, "string_table")
        for a in m.attribute_indices:
            in_range(f"mapping[{i}].attribute_indices", a, "attribute_table")
    for i, loc in enumerate(d.location_table):
        in_range(f"location[{i}].mapping_index", loc.mapping_index, "mapping_table")
        for a in loc.attribute_indices:
            in_range(f"location[{i}].attribute_indices", a, "attribute_table")
        for j, line in enumerate(loc.lines):
            in_range(f"location[{i}].lines[{j}].function_index", line.function_index, "function_table")
    for i, f in enumerate(d.function_table):
        for field in ("name_strindex", "system_name_strindex", "filename_strindex"):
            in_range(f"function[{i}].{field}", getattr(f, field), "string_table")
    for i, kv in enumerate(d.attribute_table):
        in_range(f"attribute[{i}].key_strindex", kv.key_strindex, "string_table")
        in_range(f"attribute[{i}].unit_strindex", kv.unit_strindex, "string_table")
    for i, st in enumerate(d.stack_table):
        for li in st.location_indices:
            in_range(f"stack[{i}].location_indices", li, "location_table")

    resources = []
    for ri, rp in enumerate(data.resource_profiles):
        attrs = {kv.key: any_value_str(kv.value) for kv in rp.resource.attributes}
        total = 0
        count = 0
        profiles = 0
        for sp in rp.scope_profiles:
            for pi, p in enumerate(sp.profiles):
                profiles += 1
                where = f"resource[{ri}].profile[{pi}]"
                for vt_name in ("sample_type", "period_type"):
                    vt = getattr(p, vt_name)
                    in_range(f"{where}.{vt_name}.type_strindex", vt.type_strindex, "string_table")
                    in_range(f"{where}.{vt_name}.unit_strindex", vt.unit_strindex, "string_table")
                for a in p.attribute_indices:
                    in_range(f"{where}.attribute_indices", a, "attribute_table")
                for si, s in enumerate(p.samples):
                    count += 1
                    total += sum(s.values)
                    in_range(f"{where}.sample[{si}].stack_index", s.stack_index, "stack_table")
                    in_range(f"{where}.sample[{si}].link_index", s.link_index, "link_table")
                    for a in s.attribute_indices:
                        in_range(f"{where}.sample[{si}].attribute_indices", a, "attribute_table")
        resources.append(
            {"attributes": attrs, "samples": total, "sample_count": count, "profiles": profiles}
        )
    return {"resources": resources, "tables": sizes, "errors": errors[:50], "ok": not errors}


def summarize(req):
    data = profiles_pb2.ProfilesData(
        resource_profiles=req.resource_profiles, dictionary=req.dictionary
    )
    return check_dictionary(data)


class Receiver:
    def __init__(self, args):
        self.args = args
        self.control = Control(args.control)
        self.out = Output(args.out)

    def record(self, transport, ctl, headers, encoding, size, summary, client_cn, error=None):
        self.out.write(
            {
                "t": time.time(),
                "transport": transport,
                "mode": ctl["mode"],
                "seq": ctl.get("seq", 0),
                "accepted": ctl["mode"] in ("ok", "partial_success"),
                "headers": headers,
                "encoding": encoding,
                "bytes": size,
                "summary": summary,
                "client_cn": client_cn,
                "error": error,
            }
        )


def grpc_status_for(ctl, code, message):
    details = []
    if code == code_pb2.RESOURCE_EXHAUSTED or code == code_pb2.UNAVAILABLE:
        delay_ms = ctl.get("retry_delay_ms")
        if delay_ms is not None:
            info = error_details_pb2.RetryInfo()
            info.retry_delay.seconds = delay_ms // 1000
            info.retry_delay.nanos = (delay_ms % 1000) * 1_000_000
            packed = any_pb2.Any()
            packed.Pack(info)
            details.append(packed)
    return rpc_status.to_status(status_pb2.Status(code=code, message=message, details=details))


class Received:
    """A request as it came off the wire: decoded message, encoding, size."""

    def __init__(self, request, encoding, size):
        self.request = request
        self.encoding = encoding
        self.size = size


def decode_wire(raw):
    # The server runs with per-message decompression off so that the test
    # sees whether the client compressed: grpcio strips grpc-encoding from
    # the metadata it shows. A gzip stream starts with 1f 8b, which no
    # protobuf message can (wire type 7 does not exist).
    encoding = "identity"
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
        encoding = "gzip"
    return Received(svc_pb2.ExportProfilesServiceRequest.FromString(raw), encoding, len(raw))


class Servicer(svc_grpc.ProfilesServiceServicer):
    def __init__(self, receiver):
        self.r = receiver

    def Export(self, request, context):
        if not isinstance(request, Received):
            request = Received(request, "identity", request.ByteSize())
        ctl = self.r.control.next()
        mode = ctl["mode"]
        headers = {k.lower(): (v if isinstance(v, str) else "<binary>") for k, v in context.invocation_metadata()}
        client_cn = None
        auth = context.auth_context()
        if auth.get("x509_common_name"):
            client_cn = auth["x509_common_name"][0].decode()
        summary = None
        error = None
        try:
            summary = summarize(request.request)
        except Exception as e:  # report, do not crash the server
            error = repr(e)
        self.r.record("grpc", ctl, headers, request.encoding, request.size, summary, client_cn, error)

        if mode == "hang":
            end = time.monotonic() + float(ctl.get("hang_s", 30))
            while context.is_active() and time.monotonic() < end:
                time.sleep(0.02)
            context.abort(grpc.StatusCode.UNAVAILABLE, "hang ended")
        if mode == "unavailable":
            context.abort_with_status(grpc_status_for(ctl, code_pb2.UNAVAILABLE, "test: unavailable"))
        if mode == "resource_exhausted":
            context.abort_with_status(
                grpc_status_for(ctl, code_pb2.RESOURCE_EXHAUSTED, "test: resource exhausted")
            )
        if mode == "invalid":
            context.abort_with_status(
                grpc_status_for(ctl, code_pb2.INVALID_ARGUMENT, "test: invalid argument")
            )
        resp = svc_pb2.ExportProfilesServiceResponse()
        if mode == "partial_success":
            resp.partial_success.rejected_profiles = int(ctl.get("rejected", 1))
            resp.partial_success.error_message = ctl.get("message", "test: some profiles rejected")
        return resp


def add_servicer(servicer, server):
    """Registers the official servicer's Export under the official service
    name, with a deserializer that also reports the wire encoding."""
    service = svc_pb2.DESCRIPTOR.services_by_name["ProfilesService"]
    handler = grpc.unary_unary_rpc_method_handler(
        servicer.Export,
        request_deserializer=decode_wire,
        response_serializer=svc_pb2.ExportProfilesServiceResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, {"Export": handler}),)
    )


def make_http_handler(receiver):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            pass

        def reply(self, status, body, extra=None):
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            ctl = receiver.control.next()
            mode = ctl["mode"]
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            encoding = headers.get("content-encoding", "identity")
            client_cn = None
            try:
                cert = self.connection.getpeercert()
            except (AttributeError, ValueError):
                cert = None
            if cert:
                for rdn in cert.get("subject", ()):
                    for k, v in rdn:
                        if k == "commonName":
                            client_cn = v
            summary = None
            error = None
            if self.path != HTTP_PATH:
                error = f"wrong path {self.path}"
            try:
                body = gzip.decompress(raw) if encoding == "gzip" else raw
                req = svc_pb2.ExportProfilesServiceRequest()
                req.ParseFromString(body)
                summary = summarize(req)
            except Exception as e:
                error = repr(e)
            receiver.record("http", ctl, headers, encoding, length, summary, client_cn, error)

            if self.path != HTTP_PATH:
                self.reply(404, b"")
                return
            if mode == "hang":
                time.sleep(float(ctl.get("hang_s", 30)))
                self.close_connection = True
                return
            extra = {}
            if ctl.get("retry_after") is not None:
                extra["Retry-After"] = str(ctl["retry_after"])
            if mode == "unavailable":
                st = status_pb2.Status(code=code_pb2.UNAVAILABLE, message="test: unavailable")
                self.reply(503, st.SerializeToString(), extra)
                return
            if mode == "resource_exhausted":
                st = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="test: too many requests")
                self.reply(429, st.SerializeToString(), extra)
                return
            if mode == "invalid":
                st = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="test: bad request")
                self.reply(400, st.SerializeToString())
                return
            resp = svc_pb2.ExportProfilesServiceResponse()
            if mode == "partial_success":
                resp.partial_success.rejected_profiles = int(ctl.get("rejected", 1))
                resp.partial_success.error_message = ctl.get("message", "test: some profiles rejected")
            self.reply(200, resp.SerializeToString())

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grpc-port", type=int, default=0, help="0: no gRPC server")
    ap.add_argument("--http-port", type=int, default=0, help="0: no HTTP server")
    ap.add_argument("--control", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--ready", required=True, help="file written once listening")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--tls-client-ca", help="require client certificates signed by this CA")
    args = ap.parse_args()

    receiver = Receiver(args)
    tls = args.tls_cert is not None

    grpc_server = None
    if args.grpc_port:
        grpc_server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16),
            options=[("grpc.per_message_decompression", 0)],
        )
        add_servicer(Servicer(receiver), grpc_server)
        addr = f"127.0.0.1:{args.grpc_port}"
        if tls:
            with open(args.tls_key, "rb") as f:
                key = f.read()
            with open(args.tls_cert, "rb") as f:
                cert = f.read()
            ca = None
            if args.tls_client_ca:
                with open(args.tls_client_ca, "rb") as f:
                    ca = f.read()
            creds = grpc.ssl_server_credentials(
                [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
            )
            bound = grpc_server.add_secure_port(addr, creds)
        else:
            bound = grpc_server.add_insecure_port(addr)
        if bound != args.grpc_port:
            print(f"receiver: cannot bind gRPC {addr}", file=sys.stderr)
            sys.exit(2)
        grpc_server.start()

    http_server = None
    if args.http_port:
        http.server.ThreadingHTTPServer.allow_reuse_address = True
        http_server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", args.http_port), make_http_handler(receiver)
        )
        http_server.daemon_threads = True
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(args.tls_cert, args.tls_key)
            if args.tls_client_ca:
                ctx.load_verify_locations(args.tls_client_ca)
                ctx.verify_mode = ssl.CERT_REQUIRED
            http_server.socket = ctx.wrap_socket(http_server.socket, server_side=True)
        threading.Thread(target=http_server.serve_forever, daemon=True).start()

    tmp = args.ready + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"pid": os.getpid(), "grpc_port": args.grpc_port, "http_port": args.http_port}, f)
    os.replace(tmp, args.ready)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # Exit when the test that started us is gone (stdin closes).
    def watch_stdin():
        try:
            while sys.stdin.buffer.read(1024):
                pass
        except (OSError, ValueError):
            pass
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    stop.wait()
    if grpc_server is not None:
        grpc_server.stop(0)
    if http_server is not None:
        http_server.shutdown()


if __name__ == "__main__":
    main()
