#!/usr/bin/python3
"""Apache Thrift's own Python client for the Uploader service.

An interop check written by nobody on this project: it uses Debian's
python3-thrift library and code that `thrift --gen py` generates from
idl/uploader.thrift at test time (pass its directory with --gen-dir).

Prints one JSON object on stdout and exits 0 for every answer the service
gives, including an UploadError ({"error": {"code": N, "message": ...}}) or
a TApplicationException ({"application_error": {...}}); exits 2 on a
transport failure (also reported as JSON).
"""

import argparse
import json
import sys


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gen-dir", required=True, help="output of thrift --gen py")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--transport", choices=["framed", "buffered"], default="framed")
    parser.add_argument("--protocol", choices=["binary", "compact"], default="binary")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per socket operation")
    parser.add_argument("--ping", action="store_true", help="call ping() instead of upload()")
    parser.add_argument("--file", help="image to upload")
    parser.add_argument("--filename", help="UploadRequest.filename (default: the file's name)")
    parser.add_argument("--content-type", help="UploadRequest.content_type")
    args = parser.parse_args()
    if not args.ping and not args.file:
        parser.error("give --file FILE or --ping")

    sys.path.insert(0, args.gen_dir)
    from thrift.Thrift import TApplicationException
    from thrift.protocol import TBinaryProtocol, TCompactProtocol
    from thrift.transport import TSocket, TTransport
    from uploader import Uploader
    from uploader.ttypes import UploadError, UploadRequest

    socket = TSocket.TSocket(args.host, args.port)
    socket.setTimeout(args.timeout * 1000.0)
    if args.transport == "framed":
        transport = TTransport.TFramedTransport(socket)
    else:
        transport = TTransport.TBufferedTransport(socket)
    if args.protocol == "binary":
        # Strict read and write: the Rust servers reject non-strict binary.
        protocol = TBinaryProtocol.TBinaryProtocol(transport, strictRead=True, strictWrite=True)
    else:
        protocol = TCompactProtocol.TCompactProtocol(transport)
    client = Uploader.Client(protocol)

    try:
        transport.open()
        if args.ping:
            out = {"pong": client.ping()}
        else:
            with open(args.file, "rb") as f:
                data = f.read()
            req = UploadRequest(
                data=data,
                filename=args.filename if args.filename is not None else args.file.rsplit("/", 1)[-1],
                content_type=args.content_type,
            )
            try:
                result = client.upload(req)
                out = {
                    "url": result.url,
                    "key": result.key,
                    "size": result.size,
                    "content_type": result.content_type,
                    "sha256": result.sha256,
                }
            except UploadError as e:
                out = {"error": {"code": e.code, "message": e.message}}
    except TApplicationException as e:
        out = {"application_error": {"type": e.type, "message": e.message}}
    except TTransport.TTransportException as e:
        print(json.dumps({"transport_error": {"type": e.type, "message": str(e)}}))
        return 2
    finally:
        transport.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
