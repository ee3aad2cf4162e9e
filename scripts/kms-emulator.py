"""moto's server as AWS KMS, with the two Sign behaviours real KMS has and moto 5 lacks (scripts/test-services runs it):

- MessageType DIGEST: the 32-byte message is the SHA-256 digest and is signed as such (moto hashes it again);
- MessageType RAW longer than 4096 bytes is refused with ValidationException, as KMS does.

Usage: python kms-emulator.py -H 127.0.0.1 -p PORT (the arguments of moto_server).
"""
import sys
import threading

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

import moto.kms.responses as responses
import moto.kms.utils as kms_utils
from moto.kms.exceptions import ValidationException
from moto.server import main

_request = threading.local()
_sign_response = responses.KmsResponse.sign
_sign_key = kms_utils.ECDSAPrivateKey.sign


def sign_response(self):
    message_type = self._get_param("MessageType") or "RAW"
    message = self._get_param("Message") or ""
    # The JSON body carries the message base64-encoded: 4 characters per 3 bytes.
    if message_type == "RAW" and len(message) * 3 // 4 > 4096 + 2:
        raise ValidationException("Digest is invalid length for algorithm ECDSA_SHA_256.")
    _request.digest = message_type == "DIGEST"
    try:
        return _sign_response(self)
    finally:
        _request.digest = False


def sign_key(self, message, signing_algorithm):
    if getattr(_request, "digest", False):
        if signing_algorithm != "ECDSA_SHA_256" or len(message) != 32:
            raise ValidationException("Digest is invalid length for algorithm ECDSA_SHA_256.")
        return self.private_key.sign(message, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    return _sign_key(self, message, signing_algorithm)


responses.KmsResponse.sign = sign_response
kms_utils.ECDSAPrivateKey.sign = sign_key

if __name__ == "__main__":
    main(sys.argv[1:])
