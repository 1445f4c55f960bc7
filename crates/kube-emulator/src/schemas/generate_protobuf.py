#!/usr/bin/env python3
"""Regenerates protobuf-v1.33.fds: the protobuf descriptors (a serialized FileDescriptorSet) of the Kubernetes v1.33
API types, as the v1.33 client that speaks to the emulator knows them.

Source: the kubectl 1.33 binary. Its generated Go code registers every `generated.proto` of k8s.io/api and
k8s.io/apimachinery as a gzipped FileDescriptorProto; this script finds them, keeps the stable group-versions (v1, v2)
and apimachinery, and drops the import of gogo.proto (its field options, e.g. `nullable`, stay as unknown options the
emulator reads). Usage:
    python3 generate_protobuf.py $(dirname $(readlink -f $(which kubectl)))/kubectl.1.33 > protobuf-v1.33.fds
"""
import re
import sys
import zlib

GOGO = b"github.com/gogo/protobuf/gogoproto/gogo.proto"


def varint(data, i):
    n = shift = 0
    while True:
        b = data[i]
        n |= (b & 0x7F) << shift
        i += 1
        shift += 7
        if b < 0x80:
            return n, i


def encode_varint(n):
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def fields(data):
    """Top-level (number, wire type, raw field bytes, length-delimited payload or None) of a message."""
    i = 0
    while i < len(data):
        start = i
        key, i = varint(data, i)
        number, wire = key >> 3, key & 7
        payload = None
        if wire == 0:
            _, i = varint(data, i)
        elif wire == 1:
            i += 8
        elif wire == 2:
            n, i = varint(data, i)
            payload = data[i:i + n]
            i += n
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"unexpected wire type {wire}")
        yield number, wire, data[start:i], payload


def keep(name):
    if name.startswith("k8s.io/apimachinery/"):
        return "/v1beta1/" not in name
    return re.search(r"/v[12]/generated\.proto$", name) is not None and name.startswith("k8s.io/api/")


def main():
    binary = open(sys.argv[1], "rb").read()
    files = {}
    for m in re.finditer(rb"\x1f\x8b\x08\x00\x00\x00\x00\x00", binary):
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            proto = d.decompress(binary[m.start():m.start() + 4_000_000])
        except zlib.error:
            continue
        if not d.eof or not proto.startswith(b"\x0a"):
            continue
        (number, _, _, name), *_ = fields(proto)
        name = name.decode(errors="replace")
        if number == 1 and name.endswith(".proto") and keep(name):
            # FileDescriptorProto field 3 is `dependency`.
            files.setdefault(name, b"".join(raw for n, _, raw, p in fields(proto) if not (n == 3 and p == GOGO)))
    out = bytearray()
    for name in sorted(files):
        out += b"\x0a" + encode_varint(len(files[name])) + files[name]
    sys.stdout.buffer.write(bytes(out))
    print(f"{len(files)} files", file=sys.stderr)


if __name__ == "__main__":
    main()
