"""README's "trying the API by hand": a batch written in protobuf text,
encoded by protoc, compressed by gzip, pushed with curl's equivalent."""
import os
import subprocess
import time

from harness import SRC, Device, Server, cli, request, run_tests, pb


def test_protoc_encode_and_gzip():
    with Server() as s:
        d = Device(s.data, "by hand", county="042")
        with open(os.path.join(SRC, "proto", "example-batch.txtpb")) as f:
            text = f.read()
        text = text.replace("DEVICE", "0x" + d.hex).replace("HLC", str(int(time.time() * 1000) << 16))
        enc = subprocess.run(["protoc", "--proto_path=" + os.path.join(SRC, "proto"),
                              "--encode=shahidi.v1.PushBatch",
                              os.path.join(SRC, "proto", "shahidi.proto")],
                             input=text.encode(), capture_output=True, check=True).stdout
        body = subprocess.run(["gzip", "-c"], input=enc, capture_output=True, check=True).stdout
        st, h, b = request(s.port, "POST", "/v1/push", body, {
            "Authorization": f"Bearer {d.token}", "Content-Encoding": "gzip"})
        assert st == 200, b
        r = pb.PushResponse()
        r.ParseFromString(b)
        assert r.results[0].status == pb.ChangeResult.APPLIED, r
        _, out, _ = cli("show", "--data", s.data, "01936b2a-7c00-7000-8000-000000000001")
        assert "Kisumu" in out and "Torture; Arbitrary arrest or detention" in out, out
        # protoc --decode reads the answer back, as the README shows
        dec = subprocess.run(["protoc", "--proto_path=" + os.path.join(SRC, "proto"),
                              "--decode=shahidi.v1.PushResponse",
                              os.path.join(SRC, "proto", "shahidi.proto")],
                             input=b, capture_output=True, check=True).stdout.decode()
        assert "status: APPLIED" in dec, dec


if __name__ == "__main__":
    run_tests(globals())
