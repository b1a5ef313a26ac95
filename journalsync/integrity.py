"""The end-to-end check each body carries: a checksum the store verifies before it keeps the
bytes, so a body damaged between our read and the store's disk is refused, not stored.

Two kinds, chosen per store (clients.Preset.checksum, or --checksum):
  - `md5`: Content-MD5. Every S3 store we know checks it (AWS, MinIO, R2, rclone serve s3,
    SeaweedFS; moto checks nothing). But MD5 costs about one CPU-second per 544 MB, and on
    a large new file it is the biggest part of the pre-hash, before the first byte is sent.
  - `crc64nvme`: `x-amz-checksum-crc64nvme`, the base64 of the 8-byte big-endian CRC (as
    AWS and botocore write it). awscrt computes it at several GB/s. AWS, MinIO and R2 check
    it, and so does SeaweedFS; rclone serve s3 stores it unchecked and moto ignores it, so
    there a damaged body would be kept: for a store not known to check it, MD5 stays.

For a multipart upload in `crc64nvme`, the upload is created with ChecksumAlgorithm
CRC64NVME (AWS refuses part checksums of another kind otherwise; its checksum type is
FULL_OBJECT, the only one CRC64NVME has), every part carries its CRC, and the Complete
lists each part's CRC, which the store compares with the parts it holds.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from awscrt.checksums import crc64nvme

MD5 = "md5"
CRC64NVME = "crc64nvme"
KINDS = (MD5, CRC64NVME)


def crc64_b64(crc: int) -> str:
    """The header's form of a CRC64-NVME: base64 of its 8 bytes, most significant first."""
    return base64.b64encode(crc.to_bytes(8, "big")).decode("ascii")


@dataclass(frozen=True, slots=True)
class BodyCheck:
    """One body's checksum, as a header (the CRT path) or botocore's parameter."""

    kind: str
    value: str  # base64

    @property
    def header(self) -> tuple[str, str]:
        return ("Content-MD5" if self.kind == MD5 else "x-amz-checksum-crc64nvme", self.value)

    @property
    def boto_args(self) -> dict[str, str]:
        """For put_object / upload_part: a value given, so botocore computes none itself."""
        return {"ContentMD5" if self.kind == MD5 else "ChecksumCRC64NVME": self.value}

    @property
    def completed_part(self) -> dict[str, str]:
        """What a part in CompleteMultipartUpload carries besides its number and ETag."""
        return {} if self.kind == MD5 else {"ChecksumCRC64NVME": self.value}


def of_md5(digest: bytes) -> BodyCheck:
    return BodyCheck(MD5, base64.b64encode(digest).decode("ascii"))


def of_crc(crc: int) -> BodyCheck:
    return BodyCheck(CRC64NVME, crc64_b64(crc))


def check_for(kind: str, data) -> BodyCheck:
    """The check of `kind` for the bytes `data`."""
    return of_md5(hashlib.md5(data).digest()) if kind == MD5 else of_crc(crc64nvme(data))


def create_args(kind: str) -> dict[str, str]:
    """CreateMultipartUpload's extra parameters for parts checked by `kind`."""
    return {} if kind == MD5 else {"ChecksumAlgorithm": "CRC64NVME"}
