import pytest
import torch
import torchvision

from clile_core.config import ModelConfig
from clile_core.models.backbones import BACKBONES, create_backbone, parameter_count
from clile_core.models.encoder import FeatureEncoder, au_logits


@pytest.mark.parametrize("name, width", [("resnet18", 512), ("resnet50", 2048), ("efficientnet_b2", 1408), ("swin_t", 768)])
def test_backbones_return_tokens(name, width):
    backbone = create_backbone(name).eval()
    with torch.no_grad():
        tokens = backbone(torch.randn(2, 3, 64, 64))
    assert tokens.shape == (2, 4, width) and backbone.out_dim == width


def test_registry_lists_paper_backbones_and_refuses_unknown():
    assert {"resnet18", "resnet50", "resnet152", "efficientnet_b2", "swin_t"} <= set(BACKBONES)
    with pytest.raises(ValueError, match="registered"):
        create_backbone("vgg16")


def test_resnet18_at_224_gives_49_tokens_of_512():
    with torch.no_grad():
        assert create_backbone("resnet18").eval()(torch.randn(1, 3, 224, 224)).shape == (1, 49, 512)


def test_imagenet_offline_fails_at_once_with_instructions(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="model.weights=/path/to/resnet18"):
        create_backbone("resnet18", "imagenet")


def test_local_torchvision_state_dict_loads(tmp_path):
    reference = torchvision.models.resnet18()
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    backbone = create_backbone("resnet18", str(path))
    assert torch.equal(backbone.body.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_backbone("resnet18", str(tmp_path / "missing.pth"))
    torch.save({"unrelated": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="do not fit"):
        create_backbone("resnet18", str(tmp_path / "bad.pth"))


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_encoder_projects_and_pools(pooling):
    cfg = ModelConfig(dim=32, layers=1, heads=4, ff_dim=64, pooling=pooling)
    encoder = FeatureEncoder(512, cfg, tokens=7)
    assert encoder(torch.randn(3, 7, 512)).shape == (3, 32)
    assert isinstance(FeatureEncoder(32, cfg, tokens=7).project, torch.nn.Identity)


@pytest.mark.parametrize("pos_embedding", [True, False])
def test_positional_embedding_makes_token_order_matter(pos_embedding):
    torch.manual_seed(0)
    cfg = ModelConfig(dim=16, layers=1, heads=2, ff_dim=32, dropout=0.0, pos_embedding=pos_embedding)
    encoder = FeatureEncoder(16, cfg, tokens=5).eval()
    tokens = torch.randn(2, 5, 16)
    moved = encoder(tokens[:, [4, 0, 1, 2, 3]])  # the same tokens, each in another place
    same = torch.allclose(encoder(tokens), moved, atol=1e-5)
    assert same is not pos_embedding  # mean pooling alone cannot tell where a token sits


def test_au_logits_is_inner_product_with_normalised_embeddings():
    f = torch.tensor([[2.0, 0.0]])
    shared = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    assert au_logits(f, shared).tolist() == [[2.0, 0.0]]
    per_sample = torch.tensor([[[0.0, 5.0], [-1.0, 0.0]]])
    assert au_logits(f, per_sample).tolist() == [[0.0, -2.0]]


def test_parameter_count_matches_the_built_model_without_allocating_it():
    built = sum(p.numel() for p in create_backbone("resnet18").parameters())
    assert parameter_count("resnet18") == built == 11_176_512
    assert parameter_count("resnet152") > parameter_count("resnet50") > built
