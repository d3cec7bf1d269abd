"""timm's model contract, checked through the real timm for every registered model.

timm (with torchvision) is installed for the tests only; ``tests/conftest.py`` makes it import
next to the CPU torch. To keep the suite fast, models other than the ``*_atto`` ones are built
with one block per stage and narrow stages (``depths=(1, 1, 1, 1)``, ``dims=(16, 32, 64,
128)``): the same modules, operators and kernel sizes, at a fraction of the cost; inputs are
64 px. The full-size models are built in ``tests/models/test_sw_v1.py`` and elsewhere.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
from torch import nn

import shiftwise
from shiftwise.models import MacroNet, create_model, list_models, reparameterize
from shiftwise.models.registry import pretrained_cfg

timm = pytest.importorskip("timm")
timm_optim = pytest.importorskip("timm.optim")

ALL = list_models()
TIMM_OWN = ("convnext_atto", "convnext_tiny")  # timm's own models keep these names
OURS_IN_TIMM = [name for name in ALL if name not in TIMM_OWN]
SIZE = 64


def small_kwargs(name: str) -> dict:
    """One narrow block per stage for the paper-size models (``*_atto`` are small already)."""
    return {} if name.endswith("_atto") else {"depths": (1, 1, 1, 1), "dims": (16, 32, 64, 128)}


def build(name: str, via_timm: bool = False, **kwargs) -> nn.Module:
    """``name`` built small, through timm's ``create_model`` when ``via_timm`` (our names)."""
    torch.manual_seed(0)
    factory = timm.create_model if via_timm and name not in TIMM_OWN else create_model
    return factory(name, **small_kwargs(name), **kwargs)


def randomize_norms(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and layer scales, so that eval-mode outputs are informative."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator))
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
        for name, parameter in model.named_parameters():
            if name.endswith("gamma") and parameter.dim() == 1:
                parameter.copy_(torch.rand(parameter.shape, generator=generator) * 0.5 + 0.1)
    return model


def inputs(batch: int = 2, size: int | tuple[int, int] = SIZE) -> torch.Tensor:
    height, width = (size, size) if isinstance(size, int) else size
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(1))


# --- registration and pretrained cfgs ------------------------------------------------------


def test_timm_registry_lists_our_models_and_keeps_its_own() -> None:
    for pattern in ("sw_*", "slak_*"):
        assert timm.list_models(pattern) == list_models(pattern)
    for name in TIMM_OWN:
        assert timm.models.model_entrypoint(name).__module__ == "timm.models.convnext"
    assert not timm.list_models(pretrained=True, filter="sw_*")  # no weights shipped


@pytest.mark.parametrize("name", OURS_IN_TIMM)
def test_timm_cfg_lookups_agree(name: str) -> None:
    cfg = timm.models.get_pretrained_cfg(name)
    assert cfg.to_dict() == pretrained_cfg(name)
    assert cfg.architecture == name and cfg.first_conv == "stem.0" and cfg.classifier == "head.fc"
    assert cfg.paper_ids.startswith("arXiv:") and cfg.license == "apache-2.0"
    assert timm.models.get_pretrained_cfg_value(name, "input_size") == cfg.input_size
    model = build(name, via_timm=True)
    assert isinstance(model, MacroNet)
    assert model.pretrained_cfg == cfg.to_dict() == model.default_cfg
    data = timm.data.resolve_data_config({}, model=model)
    assert data["input_size"] == cfg.input_size and data["crop_pct"] == cfg.crop_pct
    state = model.state_dict()
    assert f"{cfg.first_conv}.weight" in state and f"{cfg.classifier}.weight" in state


def test_import_without_timm_registers_nothing() -> None:
    """``import shiftwise`` works, and builds models, when ``import timm`` fails."""
    code = (
        "import sys; sys.modules['timm'] = None\n"
        "import shiftwise\n"
        "from shiftwise.models.timm_entrypoints import register_timm\n"
        "assert register_timm() == []\n"
        "print(shiftwise.create_model('convnext_atto', num_classes=3).num_classes)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3"


# --- classifier API -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_features_head_classifier_and_pools(name: str) -> None:
    model = randomize_norms(build(name, via_timm=True, num_classes=5)).eval()
    x = inputs()
    channels = model.num_features
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, channels, SIZE // 32, SIZE // 32)
        pooled = model.forward_head(features, pre_logits=True)
        assert pooled.shape == (2, model.head_hidden_size) and model.head_hidden_size == channels
        torch.testing.assert_close(model(x), model.get_classifier()(pooled))
        assert isinstance(model.get_classifier(), nn.Linear)

        model.reset_classifier(0)
        assert model(x).shape == (2, channels)
        model.reset_classifier(0, "")  # timm: no classifier, no pooling -> the unpooled map
        unpooled = model(x)
        assert unpooled.shape == features.shape
        norm = model.head.norm
        expected = norm(features.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        torch.testing.assert_close(unpooled, expected)
        model.reset_classifier(4, "")
        assert model(x).shape == (2, 4, SIZE // 32, SIZE // 32)
        for pool, reduce in (
            ("avg", lambda f: f.mean((2, 3))),
            ("max", lambda f: f.amax((2, 3))),
            ("avgmax", lambda f: 0.5 * (f.mean((2, 3)) + f.amax((2, 3)))),
        ):
            model.reset_classifier(3, pool)
            torch.testing.assert_close(
                model.forward_head(features, pre_logits=True), norm(reduce(features))
            )
            assert model(x).shape == (2, 3) and model.num_classes == 3
    with pytest.raises(ValueError, match="global_pool: "):
        model.reset_classifier(3, "catavgmax")


def test_global_pool_argument_at_creation() -> None:
    model = timm.create_model("sw_atto", num_classes=0, global_pool="").eval()
    with torch.no_grad():
        assert model(inputs()).shape == (2, 256, 2, 2)


# --- intermediates ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_forward_intermediates(name: str) -> None:
    model = randomize_norms(build(name, via_timm=True)).eval()
    x = inputs()
    info = model.feature_info
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)
        assert [m.shape for m in maps] == [
            (2, i["num_chs"], SIZE // i["reduction"], SIZE // i["reduction"]) for i in info
        ]
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(last_two, maps[2:], strict=True))
        picked = model.forward_intermediates(x, indices=[0, -1], norm=True, intermediates_only=True)
        assert torch.equal(picked[0], maps[0]) and torch.equal(picked[1], maps[3])

        calls = []
        model.stages[2].register_forward_hook(lambda *_: calls.append(1))
        early, (stage1,) = model.forward_intermediates(x, indices=[1], stop_early=True)
        assert not calls and torch.equal(early, stage1) and torch.equal(stage1, maps[1])
    for bad in ({"indices": 5}, {"indices": [4]}, {"output_fmt": "NHWC"}):
        with pytest.raises(ValueError, match=r"^(indices|output_fmt): "):
            model.forward_intermediates(x, **bad)


@pytest.mark.parametrize("name", ALL)
def test_prune_intermediate_layers(name: str) -> None:
    model = randomize_norms(build(name, num_classes=5)).eval()
    x = inputs()
    with torch.no_grad():
        maps = model.forward_intermediates(x, intermediates_only=True)
        kept = copy.deepcopy(model)
        assert kept.prune_intermediate_layers(4, prune_head=False) == [0, 1, 2, 3]
        torch.testing.assert_close(kept(x), model(x), rtol=0, atol=0)  # head kept

        assert model.prune_intermediate_layers([0, 1]) == [0, 1]
        assert len(model.stages) == 2
        assert model.num_features == model.head_hidden_size == model.feature_info[1]["num_chs"]
        assert torch.equal(model(x), maps[1])  # identity head: no pool, no norm
        assert torch.equal(model.forward_intermediates(x, indices=[0, 1])[1][0], maps[0])


# --- features_only as timm builds it ----------------------------------------------------------


FEATURE_CLASSES = [None, "getter", "fx", "hook", "list", "dict"]


@pytest.mark.parametrize(
    ("name", "feature_cls"),
    [(name, None) for name in OURS_IN_TIMM]
    + [(name, "getter") for name in OURS_IN_TIMM]
    + [("sw_atto", cls) for cls in FEATURE_CLASSES[2:]]
    + [("slak_atto", cls) for cls in FEATURE_CLASSES[2:]],
)
def test_timm_features_only(name: str, feature_cls: str | None) -> None:
    # Same seed, same construction order: the reference and the backbone share their weights.
    active = {"layer_scale_init": 0.5}  # blocks contribute (1e-6 at init)
    reference = build(name, **active).eval()
    with torch.no_grad():
        expected = reference.forward_intermediates(
            inputs(), indices=[1, 3], intermediates_only=True
        )
    kwargs = {"feature_cls": feature_cls} if feature_cls else {}
    backbone = build(
        name, via_timm=True, features_only=True, out_indices=(1, 3), **active, **kwargs
    )
    backbone.eval()
    with torch.no_grad():
        out = backbone(inputs())
    if feature_cls == "dict":
        out = list(out.values())
    assert len(out) == 2
    for got, want in zip(out, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert backbone.feature_info.channels() == [reference.dims[1], reference.dims[3]]
    assert backbone.feature_info.reduction() == [8, 32]
    assert "classifier" not in backbone.pretrained_cfg


# --- torch.fx --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_fx_trace_training_and_deployed_forms(name: str) -> None:
    model = randomize_norms(build(name, num_classes=5)).train()
    x = inputs().requires_grad_()
    traced = torch.fx.symbolic_trace(model)
    params = [p for p in model.parameters() if p.requires_grad]

    expected = model(x)
    got = traced(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    grads = torch.autograd.grad(got.square().sum(), [x, *params])
    want = torch.autograd.grad(expected.square().sum(), [x, *params])
    for a, b in zip(grads, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)

    reparameterize(model.eval())
    deployed = torch.fx.symbolic_trace(model)
    out = deployed(x)
    torch.testing.assert_close(out, model(x), rtol=0, atol=0)
    (grad_x,) = torch.autograd.grad(out.sum(), x)
    (want_x,) = torch.autograd.grad(model(x).sum(), x)
    torch.testing.assert_close(grad_x, want_x, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["sw_atto", "sw_v1_tiny"])
def test_timm_fx_feature_extraction(name: str) -> None:
    model = build(name, layer_scale_init=0.5).eval()
    nodes = timm.models.get_graph_node_names(model)[1]
    assert any(node.startswith("stages.3.blocks.") for node in nodes)
    extractor = timm.models.create_feature_extractor(
        model, return_nodes={"stages.1": "s1", "stages.3": "s3"}
    )
    with torch.no_grad():
        out = extractor(inputs())
        expected = model.forward_intermediates(inputs(), indices=[1, 3], intermediates_only=True)
    torch.testing.assert_close(out["s1"], expected[0], rtol=0, atol=0)
    torch.testing.assert_close(out["s3"], expected[1], rtol=0, atol=0)


# --- activation checkpointing ---------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_grad_checkpointing_is_exact(name: str) -> None:
    plain = build(name, num_classes=5, drop_path_rate=0.3).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.set_grad_checkpointing(True)
    assert all(stage.grad_checkpointing for stage in checkpointed.stages)
    x = inputs()
    outputs = []
    for model in (plain, checkpointed):
        torch.manual_seed(3)  # same drop-path draws
        out = model(x)
        out.square().mean().backward()
        outputs.append(out)
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=0)
    for (key, a), b in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-6, atol=1e-9, msg=key)
    for (key, a), b in zip(plain.named_buffers(), checkpointed.buffers(), strict=True):
        assert torch.equal(a, b), key  # BN statistics updated once, not again on recompute


def test_grad_checkpointing_keeps_fewer_activations() -> None:
    """What checkpointing saves for backward: block inputs instead of every activation."""
    saved = []
    for enable in (False, True):
        model = build("sw_atto").train()
        model.set_grad_checkpointing(enable)
        total = 0

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(inputs(4))
        saved.append(total)
    assert saved[1] < 0.5 * saved[0]


# --- optimizer groups ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_group_matcher_and_no_weight_decay(name: str) -> None:
    model = build(name)
    names = {n for n, _ in model.named_parameters()}
    # stem, then each stage (coarse) or each block with its stage's downsample, then the head
    for coarse, n_groups in ((True, 6), (False, 2 + sum(model.depths))):
        groups = timm.models.group_parameters(model, model.group_matcher(coarse=coarse))
        assert {n for members in groups.values() for n in members} == names
        ordered = [groups[key] for key in sorted(groups)]
        assert len(groups) == n_groups
        assert all(n.startswith("stem.") for n in ordered[0])
        assert all(n.startswith("head.") for n in ordered[-1])
        assert any(".downsample." in n for n in ordered[2 if coarse else 1 + model.depths[0]])
    skip = model.no_weight_decay()
    assert skip <= names
    assert bool(skip) == (model.block == "shiftwise")  # GRN gamma/beta
    groups = timm_optim.param_groups_weight_decay(model, 0.05, no_weight_decay_list=skip)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    named = dict(model.named_parameters())
    assert all(id(named[n]) in no_decay for n in skip)
    optimizer = timm_optim.create_optimizer_v2(model, "adamw", lr=1e-3, layer_decay=0.7)
    assert len(optimizer.param_groups) > 2


# --- torch.export ----------------------------------------------------------------------------


# One model per family (block x operator x ghost rule): export traces the same ops for the
# others, which differ only in depths, widths and kernel sizes (and cost ~8 s each).
EXPORT_FAMILIES = ["sw_tiny", "slak_tiny", "convnext_atto", "sw_v1_tiny"]


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPORT_FAMILIES)
def test_torch_export_eval_and_deployed(name: str) -> None:
    model = randomize_norms(build(name, num_classes=5)).eval()
    x = inputs()
    with torch.no_grad():
        for _ in range(2):  # eval form, then deployed form
            program = torch.export.export(model, (x,))
            torch.testing.assert_close(program.module()(x), model(x), rtol=0, atol=0)
            reparameterize(model)


# --- weights through the creation paths -------------------------------------------------------


def test_checkpoint_path_and_pretrained_file(tmp_path) -> None:
    source = randomize_norms(build("sw_atto", num_classes=3))
    path = tmp_path / "weights.safetensors"
    shiftwise.models.save_checkpoint(source.state_dict(), path)
    expected = source.state_dict()

    loaded = [
        create_model("sw_atto", num_classes=3, checkpoint_path=path),
        create_model(
            "sw_atto", num_classes=3, pretrained=True, pretrained_cfg_overlay={"file": path}
        ),
        timm.create_model(
            "sw_atto", num_classes=3, pretrained=True, pretrained_cfg_overlay={"file": str(path)}
        ),
        timm.create_model("sw_atto", num_classes=3, checkpoint_path=str(path)),  # timm's loader
    ]
    for model in loaded:
        state = model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in expected.items())
    assert loaded[2].pretrained_cfg["file"] == str(path)  # the overlay is kept
    assert loaded[2].pretrained_cfg["architecture"] == "sw_atto"

    backbone = timm.create_model(
        "sw_atto", num_classes=3, features_only=True, pretrained=True,
        pretrained_cfg_overlay={"file": str(path)},
    )  # fmt: skip
    assert torch.equal(backbone.state_dict()["stem.0.weight"], expected["stem.0.weight"])

    with pytest.raises(ValueError, match=r"^pretrained: "):
        timm.create_model("sw_atto", pretrained=True)
    with pytest.raises(ValueError, match=r"head\.fc"):  # 1000 classes against the file's 3
        create_model("sw_atto", checkpoint_path=path)
    with pytest.raises(ValueError, match=r"^pretrained_cfg: "):
        create_model("sw_atto", pretrained_cfg="in1k")


# --- timm's own scripts: train.py, validate.py, inference.py ------------------------------------
# Each model-facing call and flag of the scripts at the root of pytorch-image-models, made as the
# scripts make it. Our convnext_atto is reached through shiftwise (timm's name is timm's model).

REAL_CLIENTS = ["sw_atto", "slak_atto", "convnext_atto"]


def script_model(name: str, **kwargs) -> nn.Module:
    """``name`` as the scripts build it: timm's ``create_model``, which drops ``None`` values
    (every model flag left at its default) and applies ``set_layer_config``."""
    torch.manual_seed(0)
    if name in TIMM_OWN:
        return create_model(name, **{k: v for k, v in kwargs.items() if v is not None})
    return timm.create_model(name, **kwargs)


@pytest.mark.parametrize("name", REAL_CLIENTS)
def test_train_py_create_model_flags(name: str) -> None:
    """train.py: ``create_model(pretrained, in_chans, num_classes, drop_rate, drop_path_rate,
    drop_block_rate, global_pool, bn_momentum, bn_eps, scriptable, checkpoint_path)``, then
    ``--head-init-scale`` / ``--head-init-bias`` on ``get_classifier()``,
    ``--grad-checkpointing`` and ``--num-classes`` read back from the model."""
    flags = dict(drop_block_rate=None, bn_momentum=None, bn_eps=None, checkpoint_path=None)
    model = script_model(
        name, pretrained=False, in_chans=1, num_classes=4, drop_rate=0.2, drop_path_rate=0.1,
        global_pool="max", **flags,
    )  # fmt: skip
    assert (model.num_classes, model.in_chans, model.head.pool_type) == (4, 1, "max")
    assert model.head.drop.p == 0.2 and model.stages[3].blocks[-1].drop_path.drop_prob > 0
    with torch.no_grad():  # --head-init-scale 0.5 --head-init-bias -1
        weight = model.get_classifier().weight.clone()
        model.get_classifier().weight.mul_(0.5)
        model.get_classifier().bias.mul_(0.5)
        nn.init.constant_(model.get_classifier().bias, -1.0)
    torch.testing.assert_close(model.head.fc.weight, weight * 0.5, rtol=0, atol=0)
    model.set_grad_checkpointing(enable=True)
    out = model.train()(torch.randn(2, 1, SIZE, SIZE))
    out.sum().backward()
    assert out.shape == (2, 4) and model.stem[0].weight.grad is not None
    if name not in TIMM_OWN:
        with timm.layers.set_layer_config(scriptable=True, exportable=True, no_jit=True):
            assert timm.create_model(name, num_classes=2, scriptable=True).num_classes == 2


@pytest.mark.parametrize("flag", ["drop_block_rate", "bn_momentum", "bn_eps"])
def test_unsupported_model_flags_fail_as_timm_convnext(flag: str) -> None:
    """Flags for layers the networks do not have (DropBlock; BN momentum / eps, which the
    ConvNeXt family does not take either) raise ``TypeError`` when given, as timm's ConvNeXt."""
    for name in ("convnext_atto", "sw_atto", "slak_atto"):  # timm's ConvNeXt, then ours
        with pytest.raises(TypeError, match=flag):
            timm.create_model(name, **{flag: 0.1})


@pytest.mark.parametrize("name", REAL_CLIENTS)
def test_input_channels_resolve_through_timm_input_config(name: str) -> None:
    """inference.py / validate.py: ``resolve_model_input_args`` then
    ``resolve_input_data_config`` with ``--in-chans`` / ``--input-size``: timm reads the
    channels from the model's ``in_chans`` (the cfg's describe the weights)."""
    resolve_args = timm.models.resolve_model_input_args
    for request in ({"in_chans": 1}, {"input_size": (1, 96, 96)}, {}):
        if name in TIMM_OWN:
            model = script_model(name, num_classes=4, in_chans=request.get("in_chans", 1))
        else:
            model = timm.create_model(**resolve_args(name, request, num_classes=4))
        config = timm.data.resolve_input_data_config(model, request)
        channels = request.get("in_chans") or request.get("input_size", (model.in_chans,))[0]
        assert config["input_size"][0] == channels == model.in_chans
        assert config["crop_pct"] == model.pretrained_cfg["crop_pct"]
        with torch.no_grad():
            assert model.eval()(torch.randn(1, *config["input_size"])).shape == (1, 4)


def _split_batchnorms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("name", REAL_CLIENTS)
def test_train_py_layout_norm_conversions_and_ema(name: str, tmp_path) -> None:
    """train.py: ``--channels-last``, ``--split-bn`` (``convert_splitbn_model``), ``--sync-bn``
    (``convert_sync_batchnorm``), ``--model-ema`` (``ModelEmaV3``) and ``--resume`` of its
    EMA (``load_checkpoint(..., use_ema=True)``) on a checkpoint timm's saver layout."""
    model = randomize_norms(script_model(name, num_classes=5)).eval()
    x = inputs(4)
    with torch.no_grad():
        expected = model(x)
        last = copy.deepcopy(model).to(memory_format=torch.channels_last)
        got = last(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)

        split = timm.layers.convert_splitbn_model(copy.deepcopy(model), 2)
        splits = [m for m in split.modules() if isinstance(m, timm.layers.SplitBatchNorm2d)]
        assert len(splits) == len(_split_batchnorms(model))
        torch.testing.assert_close(split.eval()(x), expected, rtol=0, atol=0)
        # training: the first half is normalised by the main BNs with its own statistics
        reference = copy.deepcopy(model).train()
        torch.manual_seed(0)
        first = split.train()(x)[:2]
        torch.manual_seed(0)
        torch.testing.assert_close(first, reference(x[:2]), rtol=1e-5, atol=1e-5)

        synced = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(model)).eval()
        torch.testing.assert_close(synced(x), expected, rtol=0, atol=0)

    ema = timm.utils.ModelEmaV3(model, decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    saved = tmp_path / "last.pth.tar"
    torch.save(
        {"epoch": 1, "version": 2, "arch": name, "state_dict": model.state_dict(),
         "state_dict_ema": ema.module.state_dict()},
        saved,
    )  # fmt: skip
    restored = script_model(name, num_classes=5)
    timm.models.load_checkpoint(restored, str(saved), use_ema=True)
    restored_state = restored.state_dict()
    for key, value in ema.module.state_dict().items():
        assert torch.equal(restored_state[key], value), key
    resumed = script_model(name, num_classes=5)
    assert timm.models.resume_checkpoint(resumed, str(saved)) == 2  # next epoch
    assert torch.equal(resumed.stem[0].weight, model.stem[0].weight)


@pytest.mark.parametrize("name", REAL_CLIENTS)
def test_validate_py_reparam_and_test_time_pool(name: str) -> None:
    """validate.py: ``--reparam`` (timm's ``reparameterize_model``) gives our deployed form;
    ``--test-pool`` at a larger input wraps the model in ``TestTimePoolHead``."""
    model = randomize_norms(script_model(name, num_classes=5)).eval()
    x = inputs()
    with torch.no_grad():
        ours = reparameterize(copy.deepcopy(model))
        theirs = timm.utils.reparameterize_model(model)
        assert set(theirs.state_dict()) == set(ours.state_dict())
        torch.testing.assert_close(theirs(x), ours(x), rtol=0, atol=0)
        torch.testing.assert_close(theirs(x), model(x), rtol=1e-5, atol=1e-5)

        config = timm.data.resolve_data_config({"input_size": (3, 96, 96)}, model=model)
        pooled, applied = timm.layers.apply_test_time_pool(model, config)
        assert applied and pooled(inputs(size=96)).shape == (2, 5)


@pytest.mark.parametrize("name", REAL_CLIENTS)
def test_inference_py_topk_labels_and_dtypes(name: str, tmp_path) -> None:
    """inference.py: ``--checkpoint`` (timm's loader), ``--model-dtype bfloat16``, softmax
    ``--topk`` with ``--include-index``, labels from ``infer_imagenet_subset``; without
    ``--checkpoint`` it asks for ``pretrained=True``, which names the missing weights file."""
    source = randomize_norms(script_model(name, num_classes=1000))
    path = tmp_path / "weights.safetensors"
    shiftwise.models.save_checkpoint(source, path)
    model = script_model(name, num_classes=None, pretrained=False, checkpoint_path=str(path))
    assert model.num_classes == 1000
    pretrained_cfg = dict(model.pretrained_cfg)
    subset = timm.data.infer_imagenet_subset({"num_classes": model.num_classes})
    assert subset == "imagenet-1k" and "label_names" not in pretrained_cfg
    labels = timm.data.ImageNetInfo(subset)
    model = model.to(dtype=torch.bfloat16).eval()
    with torch.inference_mode():
        output = model(inputs().to(torch.bfloat16)).softmax(-1)
        probs, indices = output.topk(min(5, model.num_classes))
    assert output.dtype == torch.bfloat16 and indices.shape == (2, 5)
    assert (probs[:, :-1] >= probs[:, 1:]).all()
    assert all(labels.index_to_label_name(int(i)) for i in indices.flatten())
    if name not in TIMM_OWN:
        with pytest.raises(ValueError, match=r"^pretrained: no weights are shipped"):
            timm.create_model(name, pretrained=True)


@pytest.mark.parametrize("name", REAL_CLIENTS)
def test_torchscript_flag(name: str) -> None:
    """``--torchscript`` (``torch.jit.script``): the ConvNeXt network (plain depthwise convs)
    scripts and computes what it computes eagerly. The SW and SLaK operators do not script
    (their forward calls Python helpers and generators TorchScript does not compile);
    ``torch.compile`` (``--torchcompile``) is their compiled path (tests/models/test_compile.py)."""
    model = randomize_norms(script_model(name, num_classes=5)).eval()
    if model.operator != "conv":
        pytest.xfail("the SW and SLaK operators are not TorchScript-compatible")
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(inputs()), model(inputs()), rtol=0, atol=0)
        reparameterize(model)
        torch.testing.assert_close(torch.jit.script(model)(inputs()), model(inputs()))


def test_initial_checkpoint_with_other_classes_or_features_only(tmp_path) -> None:
    """train.py ``--initial-checkpoint`` (timm's ``load_checkpoint``, strict, as for timm's own
    models): a file for another class count or the classifier's keys against a
    ``features_only`` backbone are refused naming the head; ``--pretrained`` with the file as
    the cfg's ``file`` loads the classifier's weights before the backbone is cut from it."""
    source = randomize_norms(build("sw_atto", num_classes=1000))
    path = tmp_path / "weights.safetensors"
    shiftwise.models.save_checkpoint(source, path)
    with pytest.raises(RuntimeError, match=r"head\.fc\.weight"):
        timm.create_model("sw_atto", num_classes=10, checkpoint_path=str(path))
    with pytest.raises(RuntimeError, match=r"head\.fc\.weight"):
        timm.create_model("sw_atto", features_only=True, checkpoint_path=str(path))
    backbone = timm.create_model(
        "sw_atto", features_only=True, pretrained=True, pretrained_cfg_overlay={"file": str(path)}
    )
    assert torch.equal(backbone.state_dict()["stem.0.weight"], source.state_dict()["stem.0.weight"])


@pytest.mark.slow
def test_grad_checkpointing_under_torch_compile() -> None:
    """train.py ``--grad-checkpointing --torchcompile``: the compiled, checkpointed training
    step gives the eager outputs and gradients, and updates the BN statistics once (the
    compiled recomputation does not update them again)."""
    torch.manual_seed(0)
    plain = create_model("slak_atto", num_classes=5, layer_scale_init=0.5).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.set_grad_checkpointing(enable=True)
    compiled = torch.compile(checkpointed, backend="aot_eager")
    x = inputs(4)
    outputs = []
    for model in (plain, compiled):
        out = model(x)
        out.square().mean().backward()
        outputs.append(out)
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-6)
    for (key, a), b in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6, msg=key)
    for (key, a), b in zip(plain.named_buffers(), checkpointed.buffers(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("name", REAL_CLIENTS)
def test_aot_autograd_flag(name: str) -> None:
    """validate.py / inference.py ``--aot-autograd``: functorch's ``memory_efficient_fusion``
    of the evaluation model computes what the model computes."""
    fusion = pytest.importorskip("functorch.compile").memory_efficient_fusion
    model = randomize_norms(script_model(name, num_classes=5)).eval()
    with torch.no_grad():
        torch.testing.assert_close(fusion(model)(inputs()), model(inputs()), rtol=0, atol=0)
