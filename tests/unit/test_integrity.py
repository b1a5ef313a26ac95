"""integrity: the checksum headers and parameters each body carries, in the form AWS and
botocore give them (base64 of the CRC's 8 bytes, most significant first)."""

from __future__ import annotations

import base64
import hashlib

from botocore.httpchecksum import CrtCrc64NvmeChecksum

from journalsync.integrity import CRC64NVME, MD5, check_for, create_args


def test_a_crc_check_is_botocores_crc64nvme_and_md5_is_content_md5():
    data = b"123456789" * 1000
    expected = CrtCrc64NvmeChecksum()  # what botocore sends for ChecksumAlgorithm=CRC64NVME
    expected.update(data)
    crc = check_for(CRC64NVME, data)
    assert crc.value == base64.b64encode(expected.digest()).decode()
    assert crc.header == ("x-amz-checksum-crc64nvme", crc.value)
    assert crc.boto_args == {"ChecksumCRC64NVME": crc.value}
    assert crc.completed_part == {"ChecksumCRC64NVME": crc.value}
    md5 = check_for(MD5, data)
    assert md5.header == ("Content-MD5", base64.b64encode(hashlib.md5(data).digest()).decode())
    assert md5.boto_args == {"ContentMD5": md5.value} and md5.completed_part == {}


def test_an_upload_checked_by_crc_is_created_with_its_algorithm():
    assert create_args(CRC64NVME) == {"ChecksumAlgorithm": "CRC64NVME"}
    assert create_args(MD5) == {}
