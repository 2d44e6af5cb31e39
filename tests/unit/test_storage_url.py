"""One parser for storage URLs: what policy validation accepts is what the backends open,
and what either refuses gets one line saying what to change."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vowvault.errors import ConfigError, PolicyError
from vowvault.policies.loader import parse_policy_text
from vowvault.storage.azure import AzureConfig
from vowvault.storage.gcs import GCSConfig
from vowvault.storage.local import LocalConfig
from vowvault.storage.s3 import S3Config
from vowvault.storage.url import parse_target_url

CONFIGS = {"file": LocalConfig.from_url, "s3": S3Config.from_url, "gs": GCSConfig.from_url,
           "az": AzureConfig.from_url}

POLICY = """\
version: 1
organizations:
  - {slug: lumiere, name: Lumiere}
policies:
  - name: photos
    organization: lumiere
    source: {kind: directory, path: /srv/photos}
    schedule: {cron: "0 2 * * *"}
    storage:
      - {url: "URL"}
"""


@pytest.mark.parametrize("url", [
    "file:///backups", "file://localhost/srv/nas/vowvault", "s3://wedding-backups",
    "s3://wedding-backups/eu/prod?region=eu-west-2", "s3://my.bucket.name/x?profile=ops",
    "gs://vv_bucket-1/a/b", "gs://vv-bucket?project=weddings", "az://photos",
    "az://photos-2026/tenant?account=vowvault",
])
def test_good_urls_parse_and_open(url: str) -> None:
    target = parse_target_url(url)
    CONFIGS[target.scheme](url)
    assert parse_policy_text(POLICY.replace("URL", url), "p.yaml", {})


@pytest.mark.parametrize(("url", "says"), [
    ("az://My_Container", "not a valid container name"),
    ("az://a--b", "not a valid container name"),
    ("s3://b/p", "not a valid S3 bucket name"),
    ("s3://Bucket", "not a valid S3 bucket name"),
    ("s3://10.0.0.1", "not a valid S3 bucket name"),
    ("s3://bucket/p?foo=1", "unknown option 'foo'"),
    ("s3://bucket/p?region=a&region=b", "exactly one value"),
    ("file:///backups?fsync=0", "file:// URLs take no options"),
    ("gs://goog-bucket", "not a valid Cloud Storage bucket name"),
    ("s3://key:secret@bucket/x", "contains credentials"),
    ("az://photos?sig=abc&se=2030", "carries a secret"),
    ("file://server/share", "absolute path"),
    ("file:///srv/../etc", "'..' segments"),
    ("s3://bucket/a//b", "empty"),
    ("ftp://host/x", "unknown storage scheme"),
    ("s3://", "names no bucket"),
    ("s3://bucket#frag", "fragment"),
    ("s3://bucket:99999/x", "not a storage URL"),
])
def test_bad_urls_are_refused_in_one_line_by_both(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as info:
        parse_target_url(url)
    assert "\n" not in str(info.value)
    scheme = url.split("://", 1)[0]
    if scheme in CONFIGS:
        with pytest.raises(ConfigError):
            CONFIGS[scheme](url)
    with pytest.raises(PolicyError) as policy:
        parse_policy_text(POLICY.replace("URL", url), "p.yaml", {})
    assert "field storage[0].url" in str(policy.value) and "\n" not in str(policy.value)


ALPHABET = string.ascii_letters + string.digits + "-._~:/?#[]@!$&'()*+,;=% \x00\n"


@settings(max_examples=400, deadline=None)
@given(scheme=st.sampled_from(["file", "s3", "gs", "az", "http", ""]),
       rest=st.text(ALPHABET, max_size=40))
def test_generated_urls_parse_or_fail_cleanly_and_backends_agree(scheme: str,
                                                                 rest: str) -> None:
    url = f"{scheme}://{rest}"
    try:
        target = parse_target_url(url)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        if scheme in CONFIGS:  # what the parser refuses, the backend refuses too
            with pytest.raises(ConfigError):
                CONFIGS[scheme](url)
        return
    CONFIGS[target.scheme](url)  # what validates, the backend opens
    segments = target.path.strip("/").split("/")
    assert ".." not in segments and "." not in segments
    assert "@" not in url.split("?")[0].split("/")[2]  # no credentials got through
