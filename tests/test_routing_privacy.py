"""The sensitive-data detector: each detector, the corpus, switches and both engines."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.config.model import SidecarConfig
from sidecar.errors import ConfigError
from sidecar.routing import compile_routing, detect_sensitive
from sidecar.routing.checksums import card_valid, iban_prefix, luhn_valid, ssn_valid
from sidecar.routing.policy import compile_detector
from sidecar.routing.privacy import Detector
from sidecar.routing.rules import PrivacySettings

HAVE_HYPERSCAN = importlib.util.find_spec("hyperscan") is not None
ENGINES = [
    "python",
    pytest.param(
        "hyperscan",
        marks=pytest.mark.skipif(not HAVE_HYPERSCAN, reason="hyperscan not installed"),
    ),
]
CORPUS: dict[str, Any] = yaml.safe_load(
    (Path(__file__).parent / "data" / "privacy_corpus.yaml").read_text(encoding="utf-8")
)


@pytest.fixture(params=ENGINES)
def detector(request: pytest.FixtureRequest) -> Detector:
    built = compile_detector(PrivacySettings(engine=request.param))
    assert built.engine == request.param
    return built


def test_corpus_precision_and_recall_are_one(detector: Detector) -> None:
    tp = fp = fn = 0
    flagged_benign: list[tuple[str, tuple[str, ...]]] = []
    missed: list[tuple[str, tuple[str, ...], list[str]]] = []
    for sample in CORPUS["sensitive"]:
        fired = set(detector.detect(sample["text"]))
        expected = set(sample["expect"])
        tp += len(fired & expected)
        fp += len(fired - expected)
        fn += len(expected - fired)
        if fired != expected:
            missed.append((sample["text"], tuple(sorted(fired)), sample["expect"]))
    for text in CORPUS["benign"]:
        fired_benign = detector.detect(text)
        fp += len(fired_benign)
        if fired_benign:
            flagged_benign.append((text, fired_benign))
    precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    print(
        f"\n{detector.engine}: {len(CORPUS['sensitive'])} sensitive and "
        f"{len(CORPUS['benign'])} benign samples: precision {precision:.3f}, recall {recall:.3f}"
    )
    assert not missed
    assert not flagged_benign
    assert (precision, recall) == (1.0, 1.0)


# The seed article's five patterns, each with a text it was written for.
SEED_CASES = [
    ("SSN 123-45-6789", ("ssn",)),
    ("card 4111111111111111", ("card",)),
    ("passport AB123456", ("passport",)),
    ("the patient's diagnosis and medical record", ("medical",)),
    ("confidential and proprietary, under NDA", ("confidential",)),
]


@pytest.mark.parametrize(("text", "expected"), SEED_CASES)
def test_the_seed_patterns_fire(detector: Detector, text: str, expected: tuple[str, ...]) -> None:
    assert detector.detect(text) == expected


DETECTOR_TABLE = [
    # (text, fires) - edges of each detector
    ("123-45-6789", ("ssn",)),
    ("1123-45-6789", ()),  # a longer number
    ("123-45-67890", ()),
    ("123-45-6789-1", ()),
    ("ID-123-45-6789", ("ssn",)),
    ("4111 1111 1111 1111", ("card",)),
    ("4111-1111-1111-1111", ("card",)),
    ("4111 1111 1111 1111 1111 1111", ()),  # a 24-digit id in groups
    ("14111 1111 1111 1111", ()),
    ("x4111111111111111", ("card",)),
    ("4111111111111111x", ("card",)),
    ("AB1234567", ("passport",)),
    ("AB12345", ()),  # too few digits
    ("AB123456789", ()),  # too many
    ("XAB1234567", ()),
    ("AB1234567X", ()),
    ("ab1234567", ()),  # the seed lowercased and so could never match
    ("#AB123456", ()),  # a colour, not a passport
    ("GB82 WEST 1234 5698 7654 32", ("iban",)),
    ("GB82 WEST 1234 5698 7654 321", ()),  # runs on past the registered length
    ("GB82WEST12345698765432 TO ACCOUNT", ("iban",)),
    ("QQ82WEST12345698765432", ()),  # not a registered country
    ("patient", ("medical",)),
    ("Patients", ("medical",)),
    ("outpatient", ()),
    ("patient_id", ()),
    ("non-patient", ("medical",)),
    ("medical\nrecord", ()),
    ("NDA", ("confidential",)),
    ("NDAs", ("confidential",)),
    ("standard agenda", ()),
]


@pytest.mark.parametrize(("text", "fires"), DETECTOR_TABLE)
def test_detector_edges(detector: Detector, text: str, fires: tuple[str, ...]) -> None:
    assert detector.detect(text) == fires
    # Position must not matter: at the start, in the middle, at the end of a long text.
    filler = "The quarterly numbers for 2024 are in, see ticket 88231. " * 40
    assert detector.detect(filler + text + " " + filler) == fires
    assert detector.detect(filler + text) == fires


def test_every_detector_at_once(detector: Detector) -> None:
    text = (
        "Patient file (confidential): SSN 123-45-6789, card 4111 1111 1111 1111, "
        "passport AB1234567, IBAN DE89 3704 0044 0532 0130 00."
    )
    assert detector.detect(text) == ("card", "confidential", "iban", "medical", "passport", "ssn")


def test_a_long_benign_text_with_many_numbers_is_clean(detector: Detector) -> None:
    lines = [
        f"{2020 + i % 5}-0{1 + i % 9}-1{i % 10} 10:{i % 60:02d} order {10000 + i} port 8080 "
        f"build {1700000000000 + i * 7919} took {i % 97} ms"
        for i in range(3000)
    ]
    text = "\n".join(lines)
    fired = detector.detect(text)
    # 13-digit build ids pass Luhn one time in ten: only the card detector may fire.
    assert set(fired) <= {"card"}
    assert detector.detect(text.replace("build", "ver")) == detector.detect(text)


def test_a_very_long_digit_run_is_not_a_card(detector: Detector) -> None:
    assert detector.detect("9" * 5000) == ()
    assert detector.detect(("1234 " * 2000).strip()) == ()


def test_switches_and_custom_terms_and_patterns() -> None:
    settings = PrivacySettings(
        detectors=frozenset({"ssn"}),
        terms={"terms": ("salary", "x-ray", "covid19", "Akte"), "hr": ("payroll",)},
        patterns={"pattern:employee": r"\bEMP-\d{5}\b"},
    )
    assert detect_sensitive("card 4111 1111 1111 1111, patient", settings) == ()
    assert detect_sensitive("123-45-6789", settings) == ("ssn",)
    assert detect_sensitive("the SALARY band", settings) == ("terms",)
    assert detect_sensitive("an x-ray of the knee", settings) == ("terms",)
    assert detect_sensitive("COVID19 test", settings) == ("terms",)
    assert detect_sensitive("die akte", settings) == ("terms",)
    assert detect_sensitive("salaryman", settings) == ()
    assert detect_sensitive("payroll run", settings) == ("hr",)
    assert detect_sensitive("EMP-12345 joined", settings) == ("pattern:employee",)


def test_checksums() -> None:
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    assert card_valid("4111-1111-1111-1111")
    assert not card_valid("4111-1111-1111-1112")
    assert not card_valid("0" * 12)  # passes Luhn, too short
    assert ssn_valid("123-45-6789")
    for invalid in ("000-12-3456", "666-12-3456", "900-12-3456", "123-00-4567", "123-45-0000"):
        assert not ssn_valid(invalid), invalid
    assert iban_prefix("DE89 3704 0044 0532 0130 00") == "DE89370400440532013000"
    assert iban_prefix("DE89 3704 0044 0532 0130 00.") == "DE89370400440532013000"
    assert iban_prefix("DE89 3704 0044 0532 0130 001") is None
    assert iban_prefix("DE89 3704 0044 0532 0130 01") is None  # mod-97 fails
    assert iban_prefix("DE89 3704 0044 0532 01") is None  # too short
    assert iban_prefix("DE89 3704 0044 0532 01x0 00") is None


def test_privacy_disabled_compiles_no_detector() -> None:
    policy = compile_routing(SidecarConfig(groups={}, privacy={"enabled": False}))
    assert policy.detector is None


@pytest.mark.skipif(HAVE_HYPERSCAN, reason="hyperscan is installed")
def test_hyperscan_engine_without_the_package_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"privacy\.engine: 'hyperscan' is not installed"):
        compile_routing(SidecarConfig(groups={}, privacy={"engine": "hyperscan"}))


PIECES = [
    "4111 1111 1111 1111",
    "4111-1111-1111-1112",
    "123-45-6789",
    "987-65-4321",
    "AB1234567",
    "ab1234567",
    "DE89 3704 0044 0532 0130 00",
    "GB82WEST12345698765432",
    "patient",
    "patiently",
    "NDA",
    "standard",
    "2024-01-15",
    "1700000000123",
    "#FF123456",
]


@pytest.mark.skipif(not HAVE_HYPERSCAN, reason="hyperscan not installed")
@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(PIECES),
            st.text(alphabet="0123456789 -ABXZabz.#\n", max_size=30),
        ),
        max_size=12,
    ),
    st.sampled_from(["", " ", "-", "\n", "0", "A", "x"]),
)
def test_both_engines_agree(pieces: list[str], glue: str) -> None:
    text = glue.join(pieces)
    assert _default("python").detect(text) == _default("hyperscan").detect(text)


@functools.cache
def _default(engine: str) -> Detector:
    return compile_detector(PrivacySettings(engine=engine))
