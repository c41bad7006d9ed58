#!/usr/bin/env python3
"""Writes a small seed corpus for both targets into fuzz/corpus/<target>/ (ignored by git)."""
import os
import struct

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.join(here, "..", "corpus")


def msg(tag, body):
    return tag + struct.pack(">i", len(body) + 4) + body


def bind(params, formats, results, portal=b"", stmt=b"s1"):
    b = portal + b"\0" + stmt + b"\0" + struct.pack(">H", len(formats))
    b += b"".join(struct.pack(">h", f) for f in formats)
    b += struct.pack(">H", len(params))
    for p in params:
        b += struct.pack(">i", -1) if p is None else struct.pack(">i", len(p)) + p
    b += struct.pack(">H", len(results)) + b"".join(struct.pack(">h", f) for f in results)
    return msg(b"B", b)


def startup(params):
    body = struct.pack(">I", 196608) + b"".join(k + b"\0" + v + b"\0" for k, v in params) + b"\0"
    return struct.pack(">i", len(body) + 4) + body


frontend = {
    "query": msg(b"Q", b"select 1; select 2\0"),
    "extended": msg(b"P", b"s1\0select * from t where id = $1 and name = $2\0" + struct.pack(">HII", 2, 23, 25))
    + bind([b"42", None, b""], [1], [0, 1])
    + msg(b"D", b"Ps1\0")
    + msg(b"E", b"\0" + struct.pack(">i", 0))
    + msg(b"S", b""),
    "bind_per_param_formats": bind([b"\x00\x00\x00\x2a", b"abc"], [1, 0], [1]),
    "function_call": msg(b"F", struct.pack(">IHHHiIH", 964, 1, 1, 1, 4, 16385, 1)),
    "terminate": msg(b"X", b""),
}
startup_seeds = {
    "startup": startup([(b"user", b"app"), (b"database", b"test"), (b"application_name", b"psql")]),
    "startup_pq": startup([(b"user", b"a"), (b"_pq_.compression", b"on")]),
    "ssl": struct.pack(">iI", 8, 80877103),
    "gssenc": struct.pack(">iI", 8, 80877104),
    "cancel": struct.pack(">iIiI", 16, 80877102, 7, 12345),
    "error_body": b"SERROR\0VERROR\0C42P01\0Mrelation \"x\" does not exist\0\0",
}

for target, seeds in (("frontend", frontend), ("startup", startup_seeds)):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, "seed_" + name), "wb") as f:
            f.write(data)
    print(f"{len(seeds)} seeds in {os.path.relpath(d)}")
