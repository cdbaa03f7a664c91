"""Grounding-DINO + SAM through transformers, with tiny random checkpoints saved to disk and loaded by
from_pretrained like real ones: the plumbing (boxes, masks, sizes, detection failures), not the quality."""

import pytest

from lmmsae.records import Explanation
from lmmsae.scorers.base import ScoringContext
from lmmsae.scorers.iou import IoUScorer

from scorer_helpers import record_for


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    import torch
    from transformers import (BertConfig, BertTokenizerFast, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor, SamConfig, SamImageProcessor,
                              SamModel, SamProcessor, SwinConfig)

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("segmenter")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "red", "circle", "blue", "square", "a"]
    (root / "vocab.txt").write_text("\n".join(words) + "\n")
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=4, out_features=["stage2", "stage3", "stage4"])
    text = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64)
    config = GroundingDinoConfig(backbone_config=backbone, text_config=text, d_model=32, encoder_layers=1,
                                 decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
                                 encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=10, num_feature_levels=3,
                                 encoder_n_points=2, decoder_n_points=2, max_text_len=16, use_timm_backbone=False)
    GroundingDinoForObjectDetection(config).save_pretrained(root / "gd")
    GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 64}),
                           tokenizer=BertTokenizerFast(vocab_file=str(root / "vocab.txt"))).save_pretrained(root / "gd")
    sam = SamConfig(vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, output_channels=16,
                                       image_size=64, patch_size=16, mlp_dim=64, global_attn_indexes=[0],
                                       window_size=0, num_pos_feats=8),
                    prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=16, mask_input_channels=4),
                    mask_decoder_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, mlp_dim=32,
                                             iou_head_hidden_dim=16))
    SamModel(sam).save_pretrained(root / "sam")
    SamProcessor(image_processor=SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64})
                 ).save_pretrained(root / "sam")
    return str(root / "gd"), str(root / "sam")


def test_grounding_sam_gives_an_image_sized_mask_inside_the_detected_boxes(checkpoints, shapes):
    from lmmsae.scorers.segmenter import GroundingSam

    image = shapes.sample(0).image
    seg = GroundingSam(*checkpoints, box_threshold=0.0, text_threshold=0.0)
    boxes = seg.boxes(image, "red circle")
    assert boxes.shape[1] == 4 and len(boxes) > 0
    assert (boxes[:, 0] >= -1).all() and (boxes[:, 2] <= image.size[0] + 1).all()
    region = seg.region(image, "red circle")
    assert region.shape == image.size[::-1] and region.dtype == bool


def test_iou_scorer_counts_a_label_the_detector_misses_as_zero(checkpoints, shapes):
    detector, sam = checkpoints
    scorer = IoUScorer(IoUScorer.Options(regions="segmenter", detector=detector, sam=sam, box_threshold=1.01,
                                         k=2, baseline_draws=2))
    record = record_for(shapes, [0, 1], lambda o: True)
    out = scorer.score(record, Explanation(0, "layers.2", "t", text="red"), ScoringContext(shapes, labels={1: "blue"}))
    assert out["score"] == 0.0 and out["per_image"] == [0.0, 0.0]
    assert out["model"]["regions"] == "grounding-sam" and out["model"]["detector"] == detector
    assert out["baseline_mean"] == 0.0


def test_missing_segmenter_checkpoint_is_a_user_error(shapes, tmp_path):
    from lmmsae.errors import UserError

    scorer = IoUScorer(IoUScorer.Options(regions="segmenter", detector=str(tmp_path / "nope"), k=1))
    record = record_for(shapes, [0], lambda o: True)
    with pytest.raises(UserError, match="segmenter"):
        scorer.score(record, Explanation(0, "layers.2", "t", text="red"), ScoringContext(shapes))
