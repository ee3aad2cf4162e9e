#!/usr/bin/env python3
"""An Envoy SDS v3 client from Envoy's generated stubs (PyPI `xds-protos`, over grpcio), against `principald agent`.

Usage: python sds_check.py unix:///path/to/api.sock SPIFFE_ID TRUST_DOMAIN_ID
Subscribes with StreamSecrets to the TLS certificate SPIFFE_ID and the validation context TRUST_DOMAIN_ID, ACKs
every response as Envoy does, and prints one line per event:
  SECRET <serial>     the first TLS certificate (its leaf's serial, lowercase hex)
  CRL_HAS <serial>    a later validation context whose CRLs list that serial (then exits 0)
Exits 1 on a malformed response or after 120 s.
"""
import queue
import sys
import threading

import grpc
from cryptography import x509
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc

TYPE_URL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def pem_blocks(data, label):
    marker = f"-----BEGIN {label}-----".encode()
    return [marker + part for part in data.split(marker)[1:]]


def main():
    target, spiffe_id, trust_domain = sys.argv[1:4]
    outgoing = queue.Queue()
    outgoing.put(discovery_pb2.DiscoveryRequest(type_url=TYPE_URL, resource_names=[spiffe_id, trust_domain]))

    def requests():
        while True:
            item = outgoing.get()
            if item is None:
                return
            yield item

    channel = grpc.insecure_channel(target)
    stub = sds_pb2_grpc.SecretDiscoveryServiceStub(channel)
    responses = stub.StreamSecrets(requests(), timeout=120)
    first_serial = None
    timer = threading.Timer(120, lambda: outgoing.put(None))
    timer.daemon = True
    timer.start()
    for response in responses:
        assert response.type_url == TYPE_URL, response.type_url
        serial, revoked = None, set()
        for any_secret in response.resources:
            secret = secret_pb2.Secret()
            assert any_secret.Unpack(secret), any_secret.type_url
            if secret.HasField("tls_certificate"):
                assert secret.name == spiffe_id, secret.name
                chain = pem_blocks(secret.tls_certificate.certificate_chain.inline_bytes, "CERTIFICATE")
                leaf = x509.load_pem_x509_certificate(chain[0])
                uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                assert spiffe_id in uris.get_values_for_type(x509.UniformResourceIdentifier)
                assert secret.tls_certificate.private_key.inline_bytes.startswith(b"-----BEGIN PRIVATE KEY-----")
                serial = format(leaf.serial_number, "x")
            elif secret.HasField("validation_context"):
                assert secret.name == trust_domain, secret.name
                assert pem_blocks(secret.validation_context.trusted_ca.inline_bytes, "CERTIFICATE")
                for block in pem_blocks(secret.validation_context.crl.inline_bytes, "X509 CRL"):
                    crl = x509.load_pem_x509_crl(block)
                    revoked.update(format(r.serial_number, "x") for r in crl)
        # ACK, as Envoy does.
        outgoing.put(discovery_pb2.DiscoveryRequest(
            type_url=TYPE_URL, resource_names=[spiffe_id, trust_domain],
            version_info=response.version_info, response_nonce=response.nonce))
        if first_serial is None and serial is not None:
            first_serial = serial
            print(f"SECRET {serial}", flush=True)
        elif first_serial is not None and first_serial in revoked:
            print(f"CRL_HAS {first_serial}", flush=True)
            outgoing.put(None)
            return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
