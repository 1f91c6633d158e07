#!/usr/bin/env python3
"""A data scientist's FedGate client in Python, generated from Protos/ by grpcio-tools.

    pip install grpcio-tools
    python3 examples/python/fedgate_client.py --broker 127.0.0.1:7443 --ca ca.pem \
        --cert dana.pem --key dana.key whoami
    python3 examples/python/fedgate_client.py ... submit examples/plans/breast-cancer-research.yaml --wait

Identity comes from the certificate (--cert/--key, issued by the consortium CA): no message
carries who you are. The stubs are generated on the fly into a temporary folder, so the .proto
in the repository is the only contract.
"""
import argparse
import json
import pathlib
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_stubs():
    out = tempfile.mkdtemp(prefix="fedgate-py-")
    proto = ROOT / "Protos" / "fedgate" / "v1" / "broker.proto"
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    status = protoc.main(["protoc", f"-I{ROOT / 'Protos'}", f"-I{include}", f"--python_out={out}",
                          f"--grpc_python_out={out}", str(proto)])
    if status != 0:
        sys.exit(f"protoc failed on {proto} (status {status})")
    sys.path.insert(0, out)
    from fedgate.v1 import broker_pb2, broker_pb2_grpc  # noqa: E402
    return broker_pb2, broker_pb2_grpc


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", required=True, help="host:port of the broker")
    parser.add_argument("--broker-name", default="broker", help="the broker's id, as in its certificate")
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("whoami")
    submit = commands.add_parser("submit")
    submit.add_argument("plan")
    submit.add_argument("--wait", action="store_true", help="follow the plan until it stops")
    args = parser.parse_args()

    pb, rpc = load_stubs()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pathlib.Path(args.ca).read_bytes(),
        private_key=pathlib.Path(args.key).read_bytes(),
        certificate_chain=pathlib.Path(args.cert).read_bytes())
    options = [("grpc.ssl_target_name_override", args.broker_name)]
    with grpc.secure_channel(args.broker, credentials, options=options) as channel:
        broker = rpc.BrokerStub(channel)
        if args.command == "whoami":
            me = broker.WhoAmI(pb.WhoAmIRequest(), timeout=10)
            print(json.dumps({"id": me.id, "role": me.role, "region": me.region,
                              "certificate_not_after_ms": me.certificate_not_after_ms}))
            return
        plan_hash = broker.SubmitPlan(pb.SubmitPlanRequest(plan_yaml=pathlib.Path(args.plan).read_text()), timeout=30).plan_hash
        print(json.dumps({"plan_hash": plan_hash}), flush=True)
        while args.wait:
            status = broker.PlanStatus(pb.PlanStatusRequest(plan_hash=plan_hash), timeout=10)
            if status.state != "running":
                print(json.dumps({"state": status.state, "reason": status.reason,
                                  "rounds": [{"round": r.round, "state": r.state, "participants": list(r.participants)}
                                             for r in status.rounds]}))
                break
            time.sleep(0.2)


if __name__ == "__main__":
    try:
        main()
    except grpc.RpcError as error:
        sys.exit(f"fedgate: {error.code().name}: {error.details()}")
