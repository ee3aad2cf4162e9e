#!/usr/bin/env python3
"""Checks `principald agent` with py-spiffe (the `spiffe` package on PyPI), a client principald did not write.

Usage: SPIFFE_ENDPOINT_SOCKET=unix:///path/to/api.sock python pyspiffe_check.py SPIFFE_ID
       SPIFFE_ENDPOINT_SOCKET=unix:///path/to/api.sock python pyspiffe_check.py --expect-denied
The first form fetches an X.509-SVID (expecting SPIFFE_ID), the bundles, a JWT-SVID, and validates them (the chain
with `cryptography` and `openssl verify`, the JWT with the JWT bundle and with ValidateJWTSVID). The second expects
every fetch to be refused (a process no entry matches). Exit code 0 iff every check passes.
"""
import datetime
import os
import shutil
import subprocess
import sys
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from spiffe import JwtSvid, WorkloadApiClient

AUDIENCE = "test-aud"


def verify_chain(svid, bundle):
    """Verify leaf -> intermediates -> a root from the X.509 bundle (signatures + validity)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    chain = svid.cert_chain
    for cert in chain:
        if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
            raise RuntimeError(f"certificate {cert.subject.rfc4514_string()!r} outside validity window")
    for child, parent in zip(chain, chain[1:]):
        child.verify_directly_issued_by(parent)  # issuer name match + signature
    top = chain[-1]
    for root in bundle.x509_authorities:
        if root == top:  # chain itself ends in a trusted authority
            return root
        try:
            top.verify_directly_issued_by(root)
        except Exception:
            continue
        if not (root.not_valid_before_utc <= now <= root.not_valid_after_utc):
            raise RuntimeError("bundle authority outside validity window")
        return root
    raise RuntimeError("X.509-SVID chain does not lead to any authority in the trust bundle")


def verify_with_openssl(svid, bundle):
    """Optional cross-check with `openssl verify` (no purpose check: SVIDs may lack EKU)."""
    if not shutil.which("openssl"):
        return "skipped (no openssl)"
    pem = lambda certs: b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    with tempfile.TemporaryDirectory() as d:
        paths = {n: os.path.join(d, n) for n in ("ca.pem", "untrusted.pem", "leaf.pem")}
        open(paths["ca.pem"], "wb").write(pem(bundle.x509_authorities))
        open(paths["leaf.pem"], "wb").write(pem(svid.cert_chain[:1]))
        cmd = ["openssl", "verify", "-CAfile", paths["ca.pem"]]
        if len(svid.cert_chain) > 1:
            open(paths["untrusted.pem"], "wb").write(pem(svid.cert_chain[1:]))
            cmd += ["-untrusted", paths["untrusted.pem"]]
        r = subprocess.run(cmd + [paths["leaf.pem"]], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"openssl verify failed: {r.stdout.strip()} {r.stderr.strip()}")
        return r.stdout.strip()


def expect_denied():
    """Every fetch by a process that matches no entry must fail (PermissionDenied on the wire)."""
    with WorkloadApiClient(default_timeout=10) as client:
        for name, fetch in [
            ("x509-svid", client.fetch_x509_svid),
            ("x509-bundles", client.fetch_x509_bundles),
            ("jwt-svid", lambda: client.fetch_jwt_svid(audience={AUDIENCE})),
            ("jwt-bundles", client.fetch_jwt_bundles),
        ]:
            try:
                fetch()
            except Exception as e:  # py-spiffe wraps the gRPC status in its own error types
                text = str(e)
                if "PERMISSION_DENIED" not in text and "no identity issued" not in text:
                    raise RuntimeError(f"{name}: refused, but not as PermissionDenied: {text}")
                print(f"{name}: refused ({text[:80]})")
                continue
            raise RuntimeError(f"{name}: a process matching no entry was served")
    print("DENIED AS EXPECTED")


def main():
    if "SPIFFE_ENDPOINT_SOCKET" not in os.environ:
        sys.exit("set SPIFFE_ENDPOINT_SOCKET=unix:///path/to/socket")
    if sys.argv[1:] == ["--expect-denied"]:
        return expect_denied()
    expected = sys.argv[1] if len(sys.argv) > 1 else None

    # Socket comes from SPIFFE_ENDPOINT_SOCKET; default_timeout bounds every one-shot call.
    with WorkloadApiClient(default_timeout=10) as client:
        # 1. X.509-SVID (first SVID of the first FetchX509SVID stream message)
        svid = client.fetch_x509_svid()
        td = svid.spiffe_id.trust_domain
        if expected is not None and str(svid.spiffe_id) != expected:
            raise RuntimeError(f"expected {expected}, got {svid.spiffe_id}")
        print(f"x509-svid: {svid.spiffe_id} chain_len={len(svid.cert_chain)} "
              f"key={type(svid.private_key).__name__} not_after={svid.leaf.not_valid_after_utc}")
        leaf_pub = svid.leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        key_pub = svid.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        assert leaf_pub == key_pub, "SVID private key does not match leaf certificate"

        # Full context = SVIDs + bundle set (own bundle from X509SVID.bundle + federated_bundles)
        ctx = client.fetch_x509_context()
        print(f"x509-context: svids={[str(s.spiffe_id) for s in ctx.x509_svids]} "
              f"bundles={sorted(str(b.trust_domain) for b in ctx.x509_bundle_set.bundles)}")

        # 2. X.509 bundles (FetchX509Bundles)
        x509_bundles = client.fetch_x509_bundles()
        bundle = x509_bundles.get_bundle_for_trust_domain(td)
        assert bundle is not None, f"no X.509 bundle for trust domain {td}"
        print(f"x509-bundles: {sorted(str(b.trust_domain) for b in x509_bundles.bundles)} "
              f"({len(bundle.x509_authorities)} authorities for {td})")

        # 3. Verify the X.509-SVID chain against the bundle (py-spiffe does not do this itself)
        root = verify_chain(svid, bundle)
        print(f"x509 chain OK -> {root.subject.rfc4514_string()!r}")
        print(f"openssl: {verify_with_openssl(svid, bundle)}")

        # 4. JWT-SVID for the audience (FetchJWTSVID); parsed but signature NOT verified here
        jwt_svid = client.fetch_jwt_svid(audience={AUDIENCE})
        print(f"jwt-svid: {jwt_svid.spiffe_id} aud={sorted(jwt_svid.audience)} exp={jwt_svid.expiry}")

        # 5. JWT bundles (FetchJWTBundles)
        jwt_bundles = client.fetch_jwt_bundles()
        jwt_bundle = jwt_bundles.get_bundle_for_trust_domain(jwt_svid.spiffe_id.trust_domain)
        assert jwt_bundle is not None, "no JWT bundle for the JWT-SVID's trust domain"
        print(f"jwt-bundles: {sorted(str(b.trust_domain) for b in jwt_bundles.bundles)} "
              f"kids={sorted(jwt_bundle.jwt_authorities)}")

        # 6. Validate the JWT-SVID locally with the JWT bundle (signature, kid, alg, aud, exp, sub TD)
        validated = JwtSvid.parse_and_validate(jwt_svid.token, jwt_bundle, {AUDIENCE})
        assert validated.spiffe_id == jwt_svid.spiffe_id
        print(f"jwt-svid local validation OK: {validated.spiffe_id}")

        # 7. ...and via the server's ValidateJWTSVID RPC (py-spiffe only needs an OK status)
        remote = client.validate_jwt_svid(jwt_svid.token, AUDIENCE)
        print(f"jwt-svid ValidateJWTSVID OK: {remote.spiffe_id}")

    print("ALL CHECKS PASSED")


if __name__ == "__main__":
    main()
