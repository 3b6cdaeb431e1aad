"""Latency model on the shipped device profiles: predictions, bounds and extrapolation flags."""

from __future__ import annotations

import json

import pytest

from sparseblob.runtime.errors import SparseblobError
from sparseblob.runtime.latency import compare, list_profiles, load_profile, predict
from sparseblob.runtime.latency.costs import layer_cost
from sparseblob.runtime.latency.masks import block_mask_stats, nm_mask_stats, random_mask_stats
from sparseblob.runtime.latency.profiles import profile_from_dict
from sparseblob.runtime.latency.summaries import load_calibration

PROFILES = ["a16-ios17-ne", "a17pro-ios18-ne"]
SHAPE = (4096, 4096)
IO = ((1, 4096), (1, 4096))


def _linear(variant: str):
    if variant == "dense":
        return layer_cost("linear", SHAPE, *IO)
    if variant == "sp50":
        return layer_cost("linear", SHAPE, *IO, mask=random_mask_stats(SHAPE, 0.5))
    if variant == "sp90":
        return layer_cost("linear", SHAPE, *IO, mask=random_mask_stats(SHAPE, 0.9))
    if variant == "2:4":
        return layer_cost("linear", SHAPE, *IO, mask=nm_mask_stats(SHAPE, 2, 4))
    if variant == "pal4":
        return layer_cost("linear", SHAPE, *IO, weight_dtype="uint4", lut_shape=(1, 1, 16, 1))
    raise ValueError(variant)


VARIANTS = ["dense", "sp50", "sp90", "2:4", "pal4"]


def test_shipped_profiles_are_listed():
    assert set(PROFILES) <= set(list_profiles())
    assert not any(name.startswith("calibration-") for name in list_profiles())


def test_unknown_profile_names_the_choices():
    with pytest.raises(SparseblobError, match="a16-ios17-ne"):
        load_profile("m9-ios99-ne")


def test_profile_without_a_parameter_is_rejected():
    data = load_profile(PROFILES[0]).to_dict()
    del data["parameters"]["bandwidth_gbps"]
    with pytest.raises(SparseblobError, match="bandwidth_gbps"):
        profile_from_dict(data)


def test_profile_with_zero_bandwidth_is_rejected():
    data = load_profile(PROFILES[0]).to_dict()
    data["parameters"]["bandwidth_gbps"] = 0.0
    with pytest.raises(SparseblobError, match="bandwidth_gbps"):
        profile_from_dict(data)


def test_profile_loads_from_a_json_path(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(load_profile(PROFILES[0]).to_dict()))
    assert load_profile(path).parameters == load_profile(PROFILES[0]).parameters


# --- A 4096x4096 linear layer (batch 1) ----------------------------------------------------------
# Ratios to dense, pinned to the shipped profiles (bench/fit_latency.py prints them on refit).
# a16-ios17-ne: the dense layer is memory-bound. Every streamed compressed form is bound by its
# decode rate (about 28 G elements/s whatever the sparsity), so 50%, 90% and 2:4 tie.
# a17pro-ios18-ne: dense fp16 weights stream at 64% of the compressed rate, so every compressed
# form gains more; 90% sparse becomes decode-bound and 4-bit stays memory-bound.
EXPECTED_RATIOS = {
    "a16-ios17-ne": {"sp50": 0.914, "sp90": 0.914, "2:4": 0.914, "pal4": 0.898},
    "a17pro-ios18-ne": {"sp50": 0.370, "sp90": 0.290, "2:4": 0.370, "pal4": 0.175},
}


@pytest.fixture(scope="module")
def linear_predictions():
    return {
        profile: {variant: predict([_linear(variant)], profile) for variant in VARIANTS} for profile in PROFILES
    }


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("variant", ["sp50", "sp90", "2:4", "pal4"])
def test_large_linear_ratio_is_pinned(linear_predictions, profile, variant):
    predictions = linear_predictions[profile]
    ratio = predictions[variant].total_ms / predictions["dense"].total_ms
    assert ratio == pytest.approx(EXPECTED_RATIOS[profile][variant], abs=0.0015)


@pytest.mark.parametrize("profile", PROFILES)
def test_large_linear_is_monotone_in_compression(linear_predictions, profile):
    ms = {variant: p.total_ms for variant, p in linear_predictions[profile].items()}
    assert ms["sp50"] <= ms["dense"]
    assert ms["sp90"] <= ms["sp50"]
    assert ms["2:4"] <= ms["dense"]
    assert ms["pal4"] <= ms["sp50"]


@pytest.mark.parametrize("profile", PROFILES)
def test_large_dense_linear_is_memory_bound(linear_predictions, profile):
    assert linear_predictions[profile]["dense"].layers[0].bound == "memory"


@pytest.mark.parametrize("profile", PROFILES)
def test_dense_prediction_is_its_own_dense_equivalent(linear_predictions, profile):
    prediction = linear_predictions[profile]["dense"]
    assert prediction.ratio_to_dense == pytest.approx(1.0)


# --- Extrapolation flags ----------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_calibrated_forms_are_not_extrapolated(linear_predictions, profile):
    assert not linear_predictions[profile]["sp50"].extrapolated
    assert not linear_predictions[profile]["pal4"].extrapolated


@pytest.mark.parametrize("profile", PROFILES)
def test_n_m_sparsity_on_the_ne_is_extrapolated(linear_predictions, profile):
    prediction = linear_predictions[profile]["2:4"]
    assert prediction.extrapolated
    assert any("structured" in reason for reason in prediction.layers[0].reasons)


@pytest.mark.parametrize("profile", PROFILES)
def test_sparsity_beyond_the_rows_is_extrapolated(linear_predictions, profile):
    prediction = linear_predictions[profile]["sp90"]
    assert prediction.layers[0].extrapolated
    assert any("0.90" in reason for reason in prediction.layers[0].reasons)


def test_block_sparsity_is_extrapolated():
    cost = layer_cost("linear", SHAPE, *IO, mask=block_mask_stats(SHAPE, 0.5, 4, block_axis=0))
    assert predict([cost], PROFILES[0]).extrapolated


def test_grouped_luts_extrapolated_on_a16():
    cost = layer_cost("linear", SHAPE, *IO, weight_dtype="uint4", lut_shape=(512, 1, 16, 1))
    a16 = predict([cost], "a16-ios17-ne")
    a17 = predict([cost], "a17pro-ios18-ne")
    assert a16.extrapolated
    assert not a17.extrapolated


def test_grouped_luts_delay_a_memory_bound_layer_by_the_setup():
    profile = load_profile("a17pro-ios18-ne")
    one = layer_cost("linear", SHAPE, *IO, weight_dtype="uint4", lut_shape=(1, 1, 16, 1))
    # The second table adds 32 bytes to the weight stream, hence the tolerance.
    two = layer_cost("linear", SHAPE, *IO, weight_dtype="uint4", lut_shape=(2, 1, 16, 1))
    single, grouped = predict([one], profile).layers[0], predict([two], profile).layers[0]
    assert single.bound == grouped.bound == "memory"
    assert grouped.ms - single.ms == pytest.approx(profile.parameters["lut_layer_us"] * 1e-3, rel=1e-3)


def test_unfitted_profile_flags_every_layer():
    data = load_profile(PROFILES[0]).to_dict()
    data.update(name="a16-ios17-gpu", compute_unit="GPU", rows=[], coverage={})
    prediction = predict([_linear("dense")], profile_from_dict(data))
    assert prediction.extrapolated
    assert prediction.layers[0].reasons == ("the profile has no published rows",)


# --- Whole models ------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_fitted_residuals_match_predictions(profile):
    shipped = load_profile(profile)
    residuals = shipped.fit["residuals"]
    for row in shipped.rows:
        if row.variant == row.dense_variant:
            continue
        variants = load_calibration(row.model)
        ratio = compare(variants[row.dense_variant], variants[row.variant], shipped).ratio
        assert ratio == pytest.approx(residuals[row.key][1], abs=2e-4), row.key


def test_prediction_reports_bounds_and_totals():
    prediction = predict(load_calibration("resnet50")["pal4"], "a16-ios17-ne")
    assert len(prediction.layers) == 54
    assert sum(prediction.bounds.values()) == 54
    assert prediction.total_ms == pytest.approx(sum(layer.ms for layer in prediction.layers) + prediction.dispatch_ms)
    assert prediction.total_ms < prediction.dense_ms
    assert not prediction.extrapolated


def test_prediction_serialises_to_json():
    data = predict(load_calibration("mobilenet-v2")["sp50"], "a16-ios17-ne").to_dict()
    assert json.loads(json.dumps(data))["layers"][0]["name"] == "features.0"


def test_compare_is_b_over_a():
    variants = load_calibration("mobilenet-v3-small")
    comparison = compare(variants["fp16"], variants["pal4"], "a16-ios17-ne")
    assert comparison.ratio == pytest.approx(comparison.b.total_ms / comparison.a.total_ms)
    assert not comparison.extrapolated


def test_predict_rejects_an_empty_layer_list():
    with pytest.raises(SparseblobError, match="nothing to predict"):
        predict([], PROFILES[0])


def test_predict_rejects_an_unknown_source():
    with pytest.raises(SparseblobError, match="expected a list of LayerCost"):
        predict(42, PROFILES[0])
